"""Peak RSS of a process that runs save+load+delete cycles through DjangoSessionStore.

Prints the peak RSS after ``--checkpoint`` cycles and after ``--cycles``
cycles: a store that keeps nothing per record stays flat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord  # noqa: E402


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def run(cycles: int, checkpoint: int) -> dict[str, float]:
    store = DjangoSessionStore()
    at_checkpoint = 0.0
    started = time.perf_counter()
    for index in range(cycles):
        record = SessionRecord(SessionId.new(), index % 1000, time.time_ns())
        await store.save(record)
        await store.load(record.session_id)
        await store.delete(record.session_id)
        if index + 1 == checkpoint:
            at_checkpoint = peak_rss_mib()
    await store.aclose()
    return {
        "cycles": cycles,
        "checkpoint": checkpoint,
        "peak_rss_mib_at_checkpoint": round(at_checkpoint, 2),
        "peak_rss_mib_at_end": round(peak_rss_mib(), 2),
        "seconds": round(time.perf_counter() - started, 1),
        "path": store.path_name,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=1_000_000)
    parser.add_argument("--checkpoint", type=int, default=10_000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    print("RESULT " + json.dumps(asyncio.run(run(args.cycles, args.checkpoint))))


if __name__ == "__main__":
    main()
