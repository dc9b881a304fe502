"""What Django's middleware costs under uvicorn: the bare async view with and without it.

The bare async view of ``benchmarks/urls.py`` (``GET /bare/sessions/{id}/``,
no authentication, no DRF) is served by two uvicorn servers side by side,
one worker each, both the host project's ``aa_project.asgi``: one with the
host project's ``MIDDLEWARE``, one with ``MIDDLEWARE = []``
(``BENCH_MIDDLEWARE=none``, read by ``benchmarks/settings.py``). wrk loads
them in turn, 32 connections, repetitions interleaved (every other one in
reverse order); the ratio is the median of the paired ratios within a
repetition. Only 127.0.0.1 is targeted; every load is bounded by wrk's
``--duration``.

    .venv/bin/python -m benchmarks.middleware_bench                 # 5 x 10 s
    .venv/bin/python -m benchmarks.middleware_bench --quick         # 1 x 2 s
    BENCH_MIDDLEWARE_WITH=a.B,c.D .venv/bin/python -m benchmarks.middleware_bench  # another list

The issue's target: the full middleware at 0.6x or more of none.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.core.management import call_command  # noqa: E402

from benchmarks.http_bench import ROOT, free_port, wait_until_up, wrk  # noqa: E402
from sessions_app.models import ExecutionSession  # noqa: E402
from sessions_app.storage import SessionId  # noqa: E402

TARGET = 0.6


def prepare() -> SessionId:
    call_command("migrate", verbosity=0)
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=42, started_at_ns=1_764_067_200_123_456_789)
    return sid


def start(middleware: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "aa_project.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", "1"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), "DJANGO_SETTINGS_MODULE": "benchmarks.settings",
             "BENCH_MIDDLEWARE": middleware},
    )  # fmt: skip
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument(
        "--quick", action="store_true", help="1 repetition of 2 s: proves the benchmark works"
    )
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.repetitions = 2, 1
    if shutil.which("wrk") is None:
        print("RESULT " + json.dumps({"skipped": "wrk is not installed (apt-get install wrk)"}))
        return
    sid = prepare()
    with_middleware = os.environ.get("BENCH_MIDDLEWARE_WITH", "project")
    listed = settings.MIDDLEWARE if with_middleware == "project" else with_middleware.split(",")
    print(f"  MIDDLEWARE: {', '.join(listed)}", flush=True)
    servers = {"full middleware": start(with_middleware), "MIDDLEWARE = []": start("none")}
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in servers}
    try:
        for _, port in servers.values():
            wait_until_up(port)
        urls = {name: f"http://127.0.0.1:{port}/bare/sessions/{sid}/" for name, (_, port) in servers.items()}
        for url in urls.values():
            wrk(url, "", 1, None, "GET")  # warm-up
        for repetition in range(args.repetitions):
            order = list(urls.items())
            for name, url in order if repetition % 2 == 0 else reversed(order):
                runs[name].append(wrk(url, "", args.seconds, None, "GET"))
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=30)
    with_rates = [run["requests_per_s"] for run in runs["full middleware"]]
    none_rates = [run["requests_per_s"] for run in runs["MIDDLEWARE = []"]]
    paired = [a / b for a, b in zip(with_rates, none_rates, strict=True)]
    ratio = statistics.median(paired)
    rows = []
    for name, measured in runs.items():
        median = {key: statistics.median(run[key] for run in measured) for key in measured[0]}
        median["non_2xx"] = sum(run["non_2xx"] for run in measured)
        rows.append({"row": f"bare async view GET, {name}", **median})
        print(f"  bare async view GET, {name:17} {median['requests_per_s']:8.0f} req/s"
              f"  p50 {median['p50_ms']:.2f} ms  p99 {median['p99_ms']:.2f} ms"
              f"  non-2xx {median['non_2xx']}", flush=True)  # fmt: skip
    verdict = "held" if ratio >= TARGET else "missed"
    print(f"  full middleware vs none: {ratio:.2f}x (paired: {', '.join(f'{r:.2f}' for r in paired)});"
          f" target {TARGET}x {verdict}")  # fmt: skip
    print("RESULT " + json.dumps({"connections": 32, "seconds": args.seconds, "repetitions": args.repetitions,
                                  "vs_no_middleware": ratio, "paired": paired, "target": TARGET,
                                  "rows": rows}))  # fmt: skip


if __name__ == "__main__":
    main()
