"""CPU per call of the edge and of the peer, in one process: the HTTP benchmark's ratios without the noise.

``benchmarks/edge_bench.py`` measures both servers through uvicorn and wrk;
on a small machine PostgreSQL, wrk and the server share the cores, and
rounds of one load differ by up to 30%. Here both applications run in one
process on one event loop, called as uvicorn calls them (an ASGI scope, a
``receive`` and a ``send``) by 16 concurrent tasks, on the same PostgreSQL
database: the host project's ``aa_project.asgi.application`` (the edge,
with every policy on: authentication, permissions, agent scoping, both
throttles, the failed-authentication limit, the write log, the metrics) and
``benchmarks/peer_app.py`` (Starlette over psycopg_pool, a token compared).
Chunks of calls alternate between the two (every other pair reversed); a
row's ratio is the median over pairs of the peer's CPU per call over the
edge's (above 1: the edge is cheaper). Not counted: what uvicorn does for
both (HTTP parsing, the access log), and PostgreSQL's own work.

    .venv/bin/python -m benchmarks.edge_cpu [--pairs 10] [--calls 1600]

``BENCH_DATABASE_URL``: as ``edge_bench`` (PostgreSQL only: the peer runs
nowhere else). The write log goes to a null stream, as a file would take it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks.edge_bench import DEFAULT_URL, PUT_BODY, ROWS, ensure_postgres_database, method_of

CONCURRENCY = 16

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def setup(database_url: str) -> tuple[App, App, Any, dict[str, str], Any]:
    os.environ.update(
        DATABASE_URL=database_url,
        PEER_DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="aa_project.settings",
        DJANGO_DEBUG="0",
        DJANGO_SECURE_SSL_REDIRECT="0",
        API_THROTTLE_USER=os.environ.get("API_THROTTLE_USER", "1000000/minute"),
    )
    os.environ.setdefault("DJANGO_SECRET_KEY", "edge-cpu-benchmark-" + "x" * 40)
    ensure_postgres_database(database_url)
    import django

    django.setup()
    from aa_project.asgi import application as edge
    from benchmarks.http_bench import prepare
    from benchmarks.peer_app import app as peer
    from benchmarks.peer_app import pool

    credentials, sid = prepare()
    null = open(os.devnull, "w")  # noqa: SIM115 - the process's lifetime
    for handler in logging.getLogger("sessions_app").handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(null)
    return edge, peer, pool, {"token": credentials["token"], "key": credentials["key"]}, sid


def scope(method: str, authorization: str, path: str, body: bytes) -> dict[str, Any]:
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"user-agent", b"wrk"),
        (b"authorization", authorization.encode()),
    ]
    if body:
        headers += [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 50000), "scheme": "http", "method": method,
        "root_path": "", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers,
    }  # fmt: skip


async def call(app: App, request: dict[str, Any], body: bytes, statuses: dict[int, int]) -> None:
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # as uvicorn: nothing more until the client goes away
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    await app(dict(request), receive, send)


async def cpu_per_call(app: App, request: dict[str, Any], body: bytes, calls: int, statuses: dict) -> float:
    async def task() -> None:
        for _ in range(calls // CONCURRENCY):
            await call(app, request, body, statuses)

    started = time.process_time()
    await asyncio.gather(*[task() for _ in range(CONCURRENCY)])
    return (time.process_time() - started) / calls * 1e6


async def measure(args: argparse.Namespace, apps: tuple[App, App, Any, dict[str, str], Any]) -> list[dict]:
    from sessions_app.storage import SessionId

    edge, peer, pool, credentials, sid = apps
    await pool.open(wait=True)
    absent = SessionId.new()
    results = []
    try:
        for row, (peer_row, _target) in ROWS.items():  # edge_bench's rows, and their peer rows
            method = method_of(row)
            path = f"/api/sessions/{absent if method == 'DELETE' else sid}/"
            body = PUT_BODY.encode() if method == "PUT" else b""
            ours = scope(method, credentials["key" if "agent key" in row else "token"], path, body)
            theirs = scope(method_of(peer_row), credentials["token"], path, body)
            statuses: dict[str, dict[int, int]] = {"edge": {}, "peer": {}}
            for app, request, name in ((edge, ours, "edge"), (peer, theirs, "peer")):  # warm-up
                await cpu_per_call(app, request, body, 400, statuses[name])
            statuses = {"edge": {}, "peer": {}}
            pairs = []
            for index in range(args.pairs):
                order = [(edge, ours, "edge"), (peer, theirs, "peer")]
                measured = {}
                for app, request, name in order if index % 2 == 0 else reversed(order):
                    measured[name] = await cpu_per_call(app, request, body, args.calls, statuses[name])
                pairs.append(measured)
            ratios = [pair["peer"] / pair["edge"] for pair in pairs]
            results.append(
                {
                    "row": row,
                    "peer_row": peer_row,
                    "edge_us": statistics.median(pair["edge"] for pair in pairs),
                    "peer_us": statistics.median(pair["peer"] for pair in pairs),
                    "ratio": statistics.median(ratios),
                    "ratios": ratios,
                    "statuses": statuses,
                }
            )
            r = results[-1]
            print(f"{row:16} {r['edge_us']:8.1f} {r['peer_row']:14} {r['peer_us']:8.1f} {r['ratio']:6.2f}x"
                  f"  [{min(ratios):.2f}-{max(ratios):.2f}]  {statuses}", flush=True)  # fmt: skip
    finally:
        await pool.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--pairs", type=int, default=10, help="alternating pairs of chunks per row (10)")
    parser.add_argument("--calls", type=int, default=1600, help="calls per chunk (1600)")
    args = parser.parse_args()
    print(f"CPU per call (us), one process, {CONCURRENCY} tasks, {args.pairs} pairs of {args.calls} calls;"
          " ratio = the peer's CPU over the edge's (median of pairs)", flush=True)  # fmt: skip
    print(f"{'edge row':16} {'edge us':>8} {'peer row':14} {'peer us':>8} {'ratio':>7}", flush=True)
    apps = setup(os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL)  # migrations: before the loop
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        results = asyncio.run(measure(args, apps))
    else:
        results = uvloop.run(measure(args, apps))
    print("RESULT " + json.dumps({"rows": results}))


if __name__ == "__main__":
    sys.exit(main())
