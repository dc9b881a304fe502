"""Remote bulk calls through ``HttpSessionStore`` against the in-process store, on one database.

``save_many`` and ``load_many`` of ``--records`` (10,000) records a call:
once in this process through ``DjangoSessionStore``, once through
``HttpSessionStore`` against uvicorn serving the project on the same
database (loopback only), in the same run, interleaved round by round
(after a round not counted, which side goes first alternates). Prints
records/s and the median of the rounds' ratios; the target is remote >=
0.3x in-process. Each timed call starts from a collected heap
(``gc.collect()``), so neither side pays for a full collection the other's
garbage set off.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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


async def timed_calls(store: SessionStore, count: int) -> dict[str, float]:
    """Records/s of one save_many and one load_many of ``count`` new records, on an empty table."""
    await ExecutionSession.objects.all().adelete()
    batch = records(count)
    gc.collect()
    started = time.perf_counter()
    await store.save_many(batch)
    save = count / (time.perf_counter() - started)
    gc.collect()
    started = time.perf_counter()
    found = await store.load_many([r.session_id for r in batch])
    load = count / (time.perf_counter() - started)
    assert len(found) == count
    return {"save_many": save, "load_many": load}


async def measure(base: str, token: str, count: int, repetitions: int) -> dict[str, dict[str, float]]:
    """Medians of the rates, and the median of each repetition's remote/in-process ratio."""
    local = DjangoSessionStore()
    async with local, HttpSessionStore(f"{base}/api/sessions/", token=token, timeout=60) as remote:
        # A round not counted warms both sides (connections, the auth cache,
        # the allocator); then each round's first side alternates.
        await timed_calls(local, count)
        await timed_calls(remote, count)
        rounds = []
        for repetition in range(repetitions):
            if repetition % 2:
                theirs = await timed_calls(remote, count)
                mine = await timed_calls(local, count)
            else:
                mine = await timed_calls(local, count)
                theirs = await timed_calls(remote, count)
            rounds.append((mine, theirs))
    calls = ("save_many", "load_many")
    ratios = {call: [theirs[call] / mine[call] for mine, theirs in rounds] for call in calls}
    return {
        "in-process": {call: statistics.median(mine[call] for mine, _ in rounds) for call in calls},
        "HttpSessionStore": {call: statistics.median(theirs[call] for _, theirs in rounds) for call in calls},
        "ratio": {call: statistics.median(ratios[call]) for call in calls},
        "ratios": {call: [round(ratio, 3) for ratio in ratios[call]] for call in calls},
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
            f"HttpSessionStore {remote:9.0f} records/s, {result['ratio'][call]:5.2f}x "
            f"(paired; each round {', '.join(f'{r:.2f}' for r in result['ratios'][call])})",
            flush=True,
        )
    print("RESULT " + json.dumps({"records": args.records, **result}))


if __name__ == "__main__":
    main()
