"""One OS process of the concurrency tests: mixed save/load/delete on shared ids.

    python -m tests.concurrency_worker --index 0 --ids-file ids.txt --operations 3000 \\
        [--final | --then-final] [--http URL --token T]

Prints one JSON line: every value it wrote per id, every value it read, and
every error other than NotFound/404. ``--final`` gives each id one last
operation, by the one process that owns it (id number % processes == index).
``--then-final``: the mixed phase, its line, then (after a line on stdin,
once every process has ended its mixed phase) the final phase and its line,
in one process instead of two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")


def new_report():
    return {"written": {}, "read": {}, "errors": [], "final": {}, "operations": 0}


async def phases(args, ids, save, load, delete, current=None, per_phase=contextlib.nullcontext):
    """The phases asked for, each with a report of its own (``current["report"]``), printed as it ends.

    ``per_phase()``: a context each phase runs in (the HTTP client's, so
    that the final phase opens new connections, as a new process did).
    """
    current = {} if current is None else current
    finals = [False, True] if args.then_final else [args.final]
    for number, final in enumerate(finals):
        if number:
            await asyncio.to_thread(sys.stdin.readline)  # every process is done with the last phase
        report = current["report"] = new_report()
        async with per_phase():
            await drive(args, ids, report, save, load, delete, final)
        print(json.dumps(report), flush=True)


async def run_store(args, ids):
    import django

    django.setup()
    from sessions_app.storage import DjangoSessionStore, NotFound, SessionId, SessionRecord

    store = DjangoSessionStore()

    async def save(sid_hex, value):
        await store.save(SessionRecord(SessionId.parse(sid_hex), value[0], value[1]))

    async def load(sid_hex):
        try:
            record = await store.load(SessionId.parse(sid_hex))
        except NotFound:
            return None
        return [record.agent_id, record.started_at_ns]

    async def delete(sid_hex):
        await store.delete(SessionId.parse(sid_hex))

    await phases(args, ids, save, load, delete)
    await store.aclose()


async def run_http(args, ids):
    import httpx

    current: dict = {}  # the running phase's report and client

    @contextlib.asynccontextmanager
    async def client_of_the_phase():
        async with httpx.AsyncClient(
            base_url=args.http, headers={"Authorization": f"Token {args.token}"}, timeout=30
        ) as client:
            current["client"] = client
            yield

    def check(response, allowed):
        if response.status_code not in allowed:
            current["report"]["errors"].append(
                f"{response.request.method} {response.status_code} {response.text[:200]}"
            )

    async def save(sid_hex, value):
        response = await current["client"].put(
            f"/api/sessions/{sid_hex}/", json={"agent_id": value[0], "started_at_ns": str(value[1])}
        )
        check(response, {200, 201})

    async def load(sid_hex):
        response = await current["client"].get(f"/api/sessions/{sid_hex}/")
        check(response, {200, 404})
        if response.status_code != 200:
            return None
        body = response.json()
        return [int(body["agent_id"]), int(body["started_at_ns"])]

    async def delete(sid_hex):
        check(await current["client"].delete(f"/api/sessions/{sid_hex}/"), {204})

    await phases(args, ids, save, load, delete, current, client_of_the_phase)


async def drive(args, ids, report, save, load, delete, final):
    rng = random.Random(args.index * 7919 + (1 if final else 0))

    def value(counter):
        return [args.index * 10_000_000 + counter, rng.randrange(2**64)]

    async def one(counter, sid_hex, kind):
        try:
            if kind == "save":
                written = value(counter)
                report["written"].setdefault(sid_hex, []).append(written)
                await save(sid_hex, written)
                return ("save", written)
            if kind == "load":
                seen = await load(sid_hex)
                if seen is not None:
                    report["read"].setdefault(sid_hex, []).append(seen)
                return ("load", seen)
            await delete(sid_hex)
            return ("delete", None)
        except Exception as exc:
            report["errors"].append(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            report["operations"] += 1

    if final:
        mine = [sid for number, sid in enumerate(ids) if number % args.processes == args.index]
        for counter, sid_hex in enumerate(mine):
            kind = rng.choice(["save", "delete"])
            outcome = await one(10_000_000 - 1 - counter, sid_hex, kind)
            report["final"][sid_hex] = outcome[1] if outcome and kind == "save" else None
        return

    queue = [
        (n, rng.choice(ids), rng.choice(["save", "save", "load", "load", "delete"]))
        for n in range(args.operations)
    ]

    async def worker(part):
        for counter, sid_hex, kind in part:
            await one(counter, sid_hex, kind)

    await asyncio.gather(*(worker(queue[i :: args.tasks]) for i in range(args.tasks)))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--ids-file", required=True)
    parser.add_argument("--operations", type=int, default=3000)
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--final", action="store_true")
    parser.add_argument("--then-final", action="store_true")
    parser.add_argument("--http")
    parser.add_argument("--token")
    args = parser.parse_args()
    with open(args.ids_file) as handle:
        ids = handle.read().split()
    asyncio.run(run_http(args, ids) if args.http else run_store(args, ids))


if __name__ == "__main__":
    main()
