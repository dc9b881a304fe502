"""Store throughput on one database, against the raw driver and django.contrib.sessions.

Run by ``benchmarks/run.py`` once per database, in its own process (Django
settings are per process); prints one JSON object of medians to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from asgiref.sync import sync_to_async  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402

from sessions_app.models import ExecutionSession  # noqa: E402
from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord  # noqa: E402
from sessions_app.storage.db.sql import record_params, session_sql  # noqa: E402

Op = Callable[[int], Awaitable[object]]


async def ops_per_second(count: int, concurrency: int, op: Op) -> float:
    """Run ``op(0..count-1)`` on ``concurrency`` tasks; operations per second."""
    next_index = iter(range(count))

    async def worker() -> None:
        for index in next_index:
            await op(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)


class Bench:
    def __init__(self, cycles: int, repetitions: int, pool_size: int) -> None:
        self.cycles = cycles
        self.repetitions = repetitions
        self.pool_size = pool_size
        self.rows: list[dict[str, object]] = []
        self.sql = session_sql(ExecutionSession, "default")

    def records(self, count: int) -> list[SessionRecord]:
        base = time.time_ns()
        return [SessionRecord(SessionId.new(), index % 1000, base + index) for index in range(count)]

    async def clear(self) -> None:
        await ExecutionSession.objects.all().adelete()

    async def measure(
        self,
        name: str,
        concurrency: int,
        make_op: Callable[[list[SessionRecord]], Awaitable[Op]],
        unit: int = 1,
    ) -> float:
        """Median ops/s over the repetitions; each repetition starts from an empty table."""
        results = []
        for _ in range(self.repetitions):
            await self.clear()
            records = self.records(self.cycles)
            op = await make_op(records)
            results.append(await ops_per_second(self.cycles, concurrency, op) * unit)
        median = statistics.median(results)
        self.rows.append({"row": name, "concurrency": concurrency, "ops_per_s": round(median, 1)})
        print(f"  {connection.vendor:10} {name:44} c={concurrency:<3} {median:10.0f}/s", flush=True)
        return median


def cycle_of(
    save: Callable, load: Callable, delete: Callable
) -> Callable[[list[SessionRecord]], Awaitable[Op]]:
    async def make(records: list[SessionRecord]) -> Op:
        async def cycle(index: int) -> None:
            record = records[index]
            await save(record)
            await load(record.session_id)
            await delete(record.session_id)

        return cycle

    return make


async def raw_async_connection():
    """The raw async driver on the same table: aiosqlite, or psycopg's AsyncConnection."""
    if connection.vendor == "sqlite":
        import aiosqlite

        conn = await aiosqlite.connect(connection.settings_dict["NAME"], isolation_level=None)
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        return conn, "?"
    import psycopg

    from sessions_app.storage.db.postgresql import ConnectSpec

    spec = ConnectSpec.for_alias("default")
    conn = await psycopg.AsyncConnection.connect(
        spec.conninfo, autocommit=True, prepare_threshold=spec.prepare_threshold
    )
    return conn, "%s"


def redis_reachable() -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=1):
            return True
    except OSError:
        return False


def statement_texts(sql) -> tuple[str, str, str]:
    """The SQL of the store's save, load and delete (parameters aside)."""
    sample = SessionRecord(SessionId.new(), 1, 1)
    return sql.save(sample)[0], sql.load(sample.session_id)[0], sql.delete(sample.session_id)[0]


def qmark(sql: str, placeholder: str) -> str:
    return sql.replace("%s", placeholder)


async def run(bench: Bench, concurrencies: list[int], batch_size: int) -> None:
    sql = bench.sql
    vendor = connection.vendor

    # -- the physical limit: the raw async driver, the same three statements
    conn, mark = await raw_async_connection()
    upsert, select, delete = (qmark(s, mark) for s in statement_texts(sql))

    async def raw_save(record):
        await conn.execute(upsert, record_params(record))

    async def raw_load(session_id):
        cursor = await conn.execute(select, (bytes(session_id),))
        return await cursor.fetchone()

    async def raw_delete(session_id):
        await conn.execute(delete, (bytes(session_id),))

    for c in concurrencies if vendor == "sqlite" else [1]:
        await bench.measure("raw async driver cycle", c, cycle_of(raw_save, raw_load, raw_delete))
    await conn.close()

    if vendor == "postgresql":
        # Concurrent baseline: raw psycopg async over a pool of the store's size.
        from psycopg_pool import AsyncConnectionPool

        from sessions_app.storage.db.postgresql import ConnectSpec

        spec = ConnectSpec.for_alias("default")
        pool = AsyncConnectionPool(
            spec.conninfo,
            kwargs={"autocommit": True, "prepare_threshold": spec.prepare_threshold},
            min_size=bench.pool_size,
            max_size=bench.pool_size,
            open=False,
        )
        await pool.open(wait=True)

        async def pool_run(statement, params, fetch=False):
            async with pool.connection() as pooled:
                cursor = await pooled.execute(statement, params)
                return await cursor.fetchone() if fetch else None

        for c in concurrencies:
            await bench.measure(
                f"raw async driver, pool of {bench.pool_size}, cycle",
                c,
                cycle_of(
                    lambda r: pool_run(upsert, record_params(r)),
                    lambda s: pool_run(select, (bytes(s),), True),
                    lambda s: pool_run(delete, (bytes(s),)),
                ),
            )
        await pool.close()

    # -- raw sync driver (c=1 only: it blocks the loop by design)
    raw_sync = connection.connection if connection.connection else None
    await sync_to_async(connection.ensure_connection)()
    raw_sync = connection.connection
    cursor = raw_sync.cursor()
    sync_mark = "?" if vendor == "sqlite" else "%s"
    s_upsert, s_select, s_delete = (qmark(s, sync_mark) for s in statement_texts(sql))

    async def sync_save(record):
        cursor.execute(s_upsert, record_params(record))

    async def sync_load(session_id):
        cursor.execute(s_select, (bytes(session_id),))
        return cursor.fetchone()

    async def sync_delete(session_id):
        cursor.execute(s_delete, (bytes(session_id),))

    if vendor == "postgresql":
        raw_sync.autocommit = True
    await bench.measure(
        "raw sync driver cycle (blocks the loop)", 1, cycle_of(sync_save, sync_load, sync_delete)
    )

    # -- this app
    store = DjangoSessionStore()
    for c in concurrencies:
        await bench.measure(
            f"DjangoSessionStore ({store.path_name}) cycle", c, cycle_of(store.save, store.load, store.delete)
        )

    async def inserts(records):
        return lambda i: store.save(records[i])

    async def overwrites(records):
        await store.save_many(records)
        return lambda i: store.save(SessionRecord(records[i].session_id, 1, 1))

    async def loads(records):
        await store.save_many(records)
        return lambda i: store.load(records[i].session_id)

    async def deletes(records):
        await store.save_many(records)
        return lambda i: store.delete(records[i].session_id)

    for name, make in [
        ("save (insert)", inserts),
        ("save (overwrite)", overwrites),
        ("load", loads),
        ("delete", deletes),
    ]:
        for c in concurrencies:
            await bench.measure(f"DjangoSessionStore {name}", c, make)

    threaded = DjangoSessionStore(native_async=False)
    await bench.measure(
        "DjangoSessionStore (sync_to_async path) cycle",
        1,
        cycle_of(threaded.save, threaded.load, threaded.delete),
    )

    # -- the cached store on Redis, as app servers of a fleet would share it
    if redis_reachable():
        from sessions_app.storage import CachedSessionStore

        cached = CachedSessionStore(store, cache_alias="redis", timeout=300)
        await bench.measure(
            "CachedSessionStore (Redis) cycle", 1, cycle_of(cached.save, cached.load, cached.delete)
        )

        async def cached_loads(records):
            await cached.save_many(records)
            return lambda i: cached.load(records[i].session_id)

        await bench.measure("CachedSessionStore (Redis) load, cache hit", 1, cached_loads)
    else:
        print("  CachedSessionStore skipped: Redis at 127.0.0.1:6379 is not reachable", flush=True)

    # -- batches: records per second at batch_size records a call
    async def batch_save(records):
        async def op(i):
            if i % batch_size == 0:
                await store.save_many(records[i : i + batch_size])

        return op

    async def batch_load(records):
        await store.save_many(records)
        ids = [r.session_id for r in records]

        async def op(i):
            if i % batch_size == 0:
                await store.load_many(ids[i : i + batch_size])

        return op

    await bench.measure(f"save_many ({batch_size} a call), records", 1, batch_save)
    await bench.measure(f"load_many ({batch_size} a call), records", 1, batch_load)

    # -- what a Django user would otherwise write, and the peer
    async def orm_save(record):
        await ExecutionSession.objects.aupdate_or_create(
            session_id=record.session_id,
            defaults={"agent_id": record.agent_id, "started_at_ns": record.started_at_ns},
        )

    async def orm_load(session_id):
        return await ExecutionSession.objects.aget(session_id=session_id)

    async def orm_delete(session_id):
        await ExecutionSession.objects.filter(session_id=session_id).adelete()

    await bench.measure("naive async ORM cycle", 1, cycle_of(orm_save, orm_load, orm_delete))

    from django.contrib.sessions.backends.db import SessionStore as ContribSessionStore

    async def contrib_cycle(records):
        async def cycle(index):
            record = records[index]
            session = ContribSessionStore()
            session["agent_id"] = record.agent_id
            session["started_at_ns"] = record.started_at_ns
            await session.asave()
            again = ContribSessionStore(session_key=session.session_key)
            await again.aload()
            await again.adelete()

        return cycle

    await bench.measure("django.contrib.sessions db backend cycle", 1, contrib_cycle)
    await store.aclose()

    # Sync code: a load under its own asyncio.run() (a new loop, so on
    # PostgreSQL a new connection, closed with the loop) against store.sync.
    record = bench.records(1)[0]
    await store.save(record)
    count = max(50, bench.cycles // 20)
    for name, rate in (await asyncio.to_thread(sync_callers, store, record, count)).items():
        bench.rows.append({"row": name, "concurrency": 1, "ops_per_s": round(rate, 1)})
        print(f"  {connection.vendor:10} {name:44} c=1   {rate:10.0f}/s", flush=True)
    await store.aclose()


def sync_callers(store: DjangoSessionStore, record: SessionRecord, count: int) -> dict[str, float]:
    """Loads per second from sync code (run in a thread of its own: no loop is running there)."""
    from django.db import connections

    rates = {}
    for name, load in (
        ("sync code: asyncio.run(store.load()) per call", lambda: asyncio.run(store.load(record.session_id))),
        ("sync code: store.sync.load()", lambda: store.sync.load(record.session_id)),
    ):
        samples = []
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(count):
                assert load() == record
            samples.append(count / (time.perf_counter() - started))
        rates[name] = statistics.median(samples)
    connections.close_all()
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cycles", type=int, default=5000)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--batch-size", type=int, default=1000)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    bench = Bench(args.cycles, args.repetitions, int(os.environ.get("BENCH_POOL_SIZE", "16")))
    asyncio.run(run(bench, args.concurrency, args.batch_size))
    print("RESULT " + json.dumps({"vendor": connection.vendor, "rows": bench.rows}))


if __name__ == "__main__":
    main()
