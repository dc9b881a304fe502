"""The HTTP API under uvicorn, loaded by wrk from a second process.

Measures requests/s, p50/p99 latency and the ratio to the baseline (the
median of the ratios within each repetition) at 32 connections for
``GET`` (with a user's token and with an agent key), ``PUT`` and ``DELETE
/api/sessions/{id}/``, and for the baseline: a
bare async Django view returning the same record as JSON
(``benchmarks/urls.py``), served by the same server in the same run; once
with one uvicorn worker and once with two. The server is the host project's
``aa_project.asgi``, so the API's detail calls are answered by
``SessionsEdge`` ahead of Django; throttling is off here (the bare view has
none; ``benchmarks/edge_bench.py`` measures with it on). Every load is bounded by wrk's
``--duration``; only 127.0.0.1 is targeted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.contrib.auth.models import Permission  # noqa: E402
from django.core.management import call_command  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402
from rest_framework.settings import api_settings  # noqa: E402

from sessions_app.conf import app_settings  # noqa: E402
from sessions_app.models import AgentKey, ExecutionSession  # noqa: E402
from sessions_app.storage import SessionId  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
CONNECTIONS = 32


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare() -> tuple[dict[str, str], SessionId]:
    """The record, and the two credentials: a user's token and an agent key for its agent."""
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    user.user_permissions.set(Permission.objects.filter(codename__endswith="_executionsession"))
    token, _ = Token.objects.get_or_create(user=user)
    _, key = AgentKey.objects.create_key(name="bench", agent_ids=[42, 7])
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=42, started_at_ns=1_764_067_200_123_456_789)
    return {"token": f"Token {token.key}", "key": f"Api-Key {key}"}, sid


def wait_until_up(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"uvicorn did not listen on 127.0.0.1:{port} within {timeout}s")


def to_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    authorization: str,
    seconds: int,
    body: str | None = None,
    method: str = "PUT",
    *,
    connections: int = CONNECTIONS,
    threads: int = 2,
) -> dict[str, float]:
    """One wrk load; ``body`` None: a plain GET, else a Lua script sends ``method`` with it."""
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-H",
        f"Authorization: {authorization}",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        if body is not None:
            script = Path(scratch) / "request.lua"
            script.write_text(
                f'wrk.method = "{method}"\nwrk.headers["Content-Type"] = "application/json"\n'
                f"wrk.body = {json.dumps(body)}\n"
            )
            args += ["-s", str(script)]
        run = subprocess.run([*args, url], capture_output=True, text=True, timeout=seconds + 60, check=True)
    output = run.stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        "p50_ms": to_ms(re.search(r"\s50%\s+(\S+)", output).group(1)),  # type: ignore[union-attr]
        "p99_ms": to_ms(re.search(r"\s99%\s+(\S+)", output).group(1)),  # type: ignore[union-attr]
        "non_2xx": int(errors.group(1)) if errors else 0,
        "socket_errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
    }


def serve_and_load(
    credentials: dict[str, str], sid: SessionId, workers: int, seconds: int, repetitions: int
) -> list[dict]:
    """Start uvicorn with ``workers`` processes and load each target; one row per target."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "aa_project.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning", "--workers", str(workers)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    suffix = "" if workers == 1 else f" ({workers} workers)"
    rows = []
    try:
        wait_until_up(port)
        base = f"http://127.0.0.1:{port}"
        body = json.dumps({"agent_id": 7, "started_at_ns": "18446744073709551615"})
        token, key = credentials["token"], credentials["key"]
        targets = {
            "bare async view GET": (f"{base}/bare/sessions/{sid}/", None, "GET", token),
            "API GET /api/sessions/{id}/": (f"{base}/api/sessions/{sid}/", None, "GET", token),
            "API GET, agent key": (f"{base}/api/sessions/{sid}/", None, "GET", key),
            "API PUT /api/sessions/{id}/": (f"{base}/api/sessions/{sid}/", body, "PUT", token),
            # Deleting the same absent id again and again: each is a real DELETE statement, and a 204.
            "API DELETE /api/sessions/{id}/": (
                f"{base}/api/sessions/{SessionId.new()}/",
                "",
                "DELETE",
                token,
            ),
        }
        for url, request_body, method, authorization in targets.values():
            # warm-up: connections, prepared statements, the auth answers
            wrk(url, authorization, 1, request_body, method)
        # Repetitions interleave the targets, every other one in reverse
        # order, so a drift of the machine's speed during the run weighs on
        # every row alike; each row's ratio to the bare view is the median
        # of its ratios within a repetition (paired, as the drift between
        # repetitions is larger than the difference measured here).
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for repetition in range(repetitions):
            order = list(targets.items())
            for name, (url, request_body, method, authorization) in (
                order if repetition % 2 == 0 else reversed(order)
            ):
                runs[name].append(wrk(url, authorization, seconds, request_body, method))
        bare = [run["requests_per_s"] for run in runs["bare async view GET"]]
        token_get = [run["requests_per_s"] for run in runs["API GET /api/sessions/{id}/"]]
        for name, measured in runs.items():
            median = {key: statistics.median(run[key] for run in measured) for key in measured[0]}
            median["non_2xx"] = sum(run["non_2xx"] for run in measured)
            paired = [run["requests_per_s"] / base for run, base in zip(measured, bare, strict=True)]
            median["vs_bare"] = statistics.median(paired)
            # The agent key's GET against the token's, paired the same way.
            by_token = [run["requests_per_s"] / get for run, get in zip(measured, token_get, strict=True)]
            median["vs_token_get"] = statistics.median(by_token)
            rows.append({"row": name + suffix, **median})
            print(f"  {name + suffix:44} {median['requests_per_s']:8.0f} req/s"
                  f" ({median['vs_bare']:.2f}x bare, {median['vs_token_get']:.2f}x token GET)"
                  f"  p50 {median['p50_ms']:.2f} ms  p99 {median['p99_ms']:.2f} ms"
                  f"  non-2xx {median['non_2xx']}", flush=True)  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("RESULT " + json.dumps({"skipped": "wrk is not installed (apt-get install wrk)"}))
        return
    credentials, sid = prepare()
    print(
        "  API policies: "
        + ", ".join(cls.__name__ for cls in api_settings.DEFAULT_AUTHENTICATION_CLASSES)
        + "; "
        + ", ".join(cls.__name__ for cls in app_settings.PERMISSION_CLASSES)
        + f"; AUTH_CACHE_TIMEOUT={app_settings.AUTH_CACHE_TIMEOUT}",
        flush=True,
    )
    rows = []
    for workers in (1, 2):
        rows += serve_and_load(credentials, sid, workers, args.seconds, args.repetitions)
    print("RESULT " + json.dumps({"connections": CONNECTIONS, "rows": rows}))


if __name__ == "__main__":
    main()
