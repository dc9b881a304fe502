"""Remote bulk calls through ``HttpSessionStore`` against the in-process store, on one database.

``save_many`` and ``load_many`` of ``--records`` (10,000) records a call:
once in this process through ``DjangoSessionStore``, once through
``HttpSessionStore`` against uvicorn serving the project on the same
database (loopback only), in the same run. Prints records/s and the ratio;
the target is remote >= 0.25x in-process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

from benchmarks.http_bench import ROOT, free_port, prepare, wait_until_up
from sessions_app.client import HttpSessionStore
from sessions_app.models import ExecutionSession
from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord, SessionStore


def records(count: int) -> list[SessionRecord]:
    base = time.time_ns()
    return [SessionRecord(SessionId.new(), n % 1000, base + n) for n in range(count)]


async def rates(store: SessionStore, count: int, repetitions: int) -> dict[str, float]:
    """Median records/s of save_many and load_many, each repetition on an empty table."""
    saves, loads = [], []
    for _ in range(repetitions):
        await ExecutionSession.objects.all().adelete()
        batch = records(count)
        started = time.perf_counter()
        await store.save_many(batch)
        saves.append(count / (time.perf_counter() - started))
        started = time.perf_counter()
        found = await store.load_many([r.session_id for r in batch])
        loads.append(count / (time.perf_counter() - started))
        assert len(found) == count
    return {"save_many": statistics.median(saves), "load_many": statistics.median(loads)}


async def measure(base: str, token: str, count: int, repetitions: int) -> dict[str, dict[str, float]]:
    local = DjangoSessionStore()
    async with local, HttpSessionStore(f"{base}/api/sessions/", token=token, timeout=60) as remote:
        await rates(remote, 100, 1)  # warm-up: connections, the auth cache
        return {
            "in-process": await rates(local, count, repetitions),
            "HttpSessionStore": await rates(remote, count, repetitions),
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--repetitions", type=int, default=5)
    args = parser.parse_args()
    credentials, _ = prepare()
    token = credentials["token"].removeprefix("Token ")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "aa_project.asgi:application", "--host", "127.0.0.1",
         "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        wait_until_up(port)
        result = asyncio.run(measure(f"http://127.0.0.1:{port}", token, args.records, args.repetitions))
    finally:
        server.terminate()
        server.wait(timeout=30)
    for call in ("save_many", "load_many"):
        local, remote = result["in-process"][call], result["HttpSessionStore"][call]
        print(
            f"  {call} ({args.records} a call): in-process {local:9.0f} records/s, "
            f"HttpSessionStore {remote:9.0f} records/s, {remote / local:5.2f}x",
            flush=True,
        )
    print("RESULT " + json.dumps({"records": args.records, **result}))


if __name__ == "__main__":
    main()
