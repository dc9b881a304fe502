"""The PostgreSQL path's pool: waiting, timeouts and cancellation, on a real server."""

from __future__ import annotations

import asyncio
import time

import psycopg
import pytest
from django.db import connection

from sessions_app.storage import BackendError, DjangoSessionStore, SessionId, SessionRecord

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def one_connection_store(settings) -> DjangoSessionStore:
    if connection.vendor != "postgresql":
        pytest.skip("the pool exists on PostgreSQL only")
    settings.SESSIONS_APP = {"POOL_SIZE": 1, "POOL_TIMEOUT": 5}
    store = DjangoSessionStore()
    assert store.path_name == "PostgresPath"
    return store


def sleep_for(seconds: float) -> tuple[str, tuple[float]]:
    return ("SELECT pg_sleep(%s)", (seconds,))


async def test_a_caller_waits_for_the_busy_connection_and_then_gets_it(one_connection_store):
    store = one_connection_store
    started = time.monotonic()
    await asyncio.gather(store.path.execute(sleep_for(0.3)), store.path.execute(sleep_for(0.3)))
    assert time.monotonic() - started >= 0.6  # one after the other, on the one connection
    pool = store.path.pool_for_running_loop()
    assert (pool.open_count, pool.in_use) == (1, 0)


async def test_a_waiter_cancelled_while_waiting_takes_nothing_with_it(one_connection_store):
    store = one_connection_store
    holder = asyncio.create_task(store.path.execute(sleep_for(0.4)))
    await asyncio.sleep(0.1)
    waiter = asyncio.create_task(store.load(SessionId.new()))
    await asyncio.sleep(0.1)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await holder
    pool = store.path.pool_for_running_loop()
    assert (pool.open_count, pool.in_use) == (1, 0)
    record = SessionRecord(SessionId.new(), 1, 1)
    await asyncio.wait_for(store.save(record), 2)  # the connection came back to the pool
    assert await store.load(record.session_id) == record


async def test_a_call_cancelled_mid_query_leaves_a_usable_pool(one_connection_store):
    store = one_connection_store
    running = asyncio.create_task(store.path.execute(sleep_for(30)))
    await asyncio.sleep(0.3)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    pool = store.path.pool_for_running_loop()
    assert pool.in_use == 0
    started = time.monotonic()
    record = SessionRecord(SessionId.new(), 2, 2)
    await store.save(record)  # not stuck behind the cancelled 30 s query
    assert await store.load(record.session_id) == record
    assert time.monotonic() - started < 5


async def test_waiting_longer_than_pool_timeout_is_a_backend_error_and_the_pool_recovers(settings):
    if connection.vendor != "postgresql":
        pytest.skip("the pool exists on PostgreSQL only")
    settings.SESSIONS_APP = {"POOL_SIZE": 1, "POOL_TIMEOUT": 0.3}
    store = DjangoSessionStore()
    holder = asyncio.create_task(store.path.execute(sleep_for(1)))
    await asyncio.sleep(0.1)
    with pytest.raises(BackendError, match=r"stayed busy for 0\.3s"):
        await store.load(SessionId.new())
    await holder
    assert await store.load_many([SessionId.new()]) == {}


async def test_a_connection_handed_over_as_the_wait_times_out_is_not_lost(settings):
    """The hand-over and the timeout fall due in one loop iteration (Python 3.12+ then raises TimeoutError).

    The loop is blocked past the waiter's deadline with ``time.sleep``; the
    release is queued before the blocking ends, so in the next iteration it
    runs first and hands the connection to the waiter, and the timeout's
    callback runs right after it, before the waiter resumes. Nothing here
    depends on how long anything takes: the sleep only has to outlast the
    deadline, which it always does.
    """
    if connection.vendor != "postgresql":
        pytest.skip("the pool exists on PostgreSQL only")
    settings.SESSIONS_APP = {"POOL_SIZE": 1, "POOL_TIMEOUT": 0.5}
    store = DjangoSessionStore()
    pool = await store.path._pool()
    held, _ = await pool.acquire()
    waiter = asyncio.create_task(pool.acquire())
    for _ in range(100):  # until the waiter is queued (a few loop turns)
        if pool._waiters:
            break
        await asyncio.sleep(0)
    assert pool._waiters
    asyncio.get_running_loop().call_soon(pool.release, held)
    time.sleep(1)  # noqa: ASYNC251 - blocks the loop past the waiter's deadline, on purpose
    try:
        got: tuple[object, bool] | None = await waiter
    except psycopg.OperationalError:  # "stayed busy": what the defect did, keeping the connection
        got = None
    else:
        pool.release(held)
    assert (pool.open_count, pool.in_use) == (1, 0)  # every connection came back
    assert got == (held, True)  # the waiter took the connection it was handed
    record = SessionRecord(SessionId.new(), 3, 3)
    await asyncio.wait_for(store.save(record), 5)
    assert await store.load(record.session_id) == record


async def test_waiters_time_out_each_at_its_own_deadline_and_a_cancelled_one_is_skipped(settings):
    """Queued 0.1 s apart with a 0.4 s timeout: each fails at its own deadline, not at the first one's.

    One timer serves the queue (the oldest waiter's deadline); a waiter
    cancelled in between neither fails the others early nor is handed the
    connection afterwards.
    """
    if connection.vendor != "postgresql":
        pytest.skip("the pool exists on PostgreSQL only")
    settings.SESSIONS_APP = {"POOL_SIZE": 1, "POOL_TIMEOUT": 0.4}
    store = DjangoSessionStore()
    pool = await store.path._pool()
    held, _ = await pool.acquire()
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def wait_and_time() -> float:
        with pytest.raises(psycopg.OperationalError, match=r"stayed busy for 0\.4s"):
            await pool.acquire()
        return loop.time() - started

    first = asyncio.create_task(wait_and_time())
    await asyncio.sleep(0.1)
    cancelled = asyncio.create_task(pool.acquire())
    await asyncio.sleep(0.1)
    last = asyncio.create_task(wait_and_time())
    await asyncio.sleep(0.05)
    cancelled.cancel()
    first_at, last_at = await asyncio.gather(first, last)
    assert first_at >= 0.4  # not before its deadline
    assert last_at >= 0.6  # nor the last before its own, 0.2 s later (not with the first)
    assert cancelled.cancelled()
    assert not pool._waiters and pool._expiry is None
    pool.release(held)
    assert (pool.open_count, pool.in_use) == (1, 0)
    assert await store.load_many([SessionId.new()]) == {}
