"""The native async path to PostgreSQL: psycopg 3's ``AsyncConnection``, pooled.

Why not Django's async ORM: every query it runs hops to a worker thread
(``sync_to_async``), and that hop costs more than half of what the query
itself costs on a local server. psycopg 3 speaks asyncio natively, so the
event loop waits on the socket directly, and 64 concurrent tasks have up to
``POOL_SIZE`` queries in flight at once rather than queueing behind one
thread.

Why a small pool of its own rather than ``psycopg_pool``: this path runs
three one-statement operations, each far shorter than psycopg_pool's
bookkeeping; in ``benchmarks/`` its check-out and return cost about a
quarter of a save+load+delete cycle at concurrency 1. ``LeanPool`` does the
least that is still correct: idle connections on a stack, at most ``size``
open, waiters served first-come, broken connections dropped.

Configuration comes from Django: connections open with the alias'
``get_connection_params()`` (``NAME``, ``USER``, ``HOST``, ``OPTIONS`` ...),
in autocommit mode. One pool per alias and event loop, since asyncio objects
belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from django.db import connections
from psycopg.pq import TransactionStatus

from .errors import BackendError, ConflictError
from .sql import ARRAY_ROWS, SessionSQL, chunks, column_params
from .types import SessionRecord

# Django-specific keys of get_connection_params() that psycopg.connect does not take.
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "pool", "server_side_binding")

_pools: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LeanPool]] = {}


def connection_kwargs(alias: str) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for the Django alias, in autocommit."""
    wrapper = connections[alias]
    params = wrapper.get_connection_params()
    for key in _DJANGO_ONLY_PARAMS:
        params.pop(key, None)
    if "prepare_threshold" not in wrapper.settings_dict["OPTIONS"]:
        # Django turns server-side prepared statements off unless OPTIONS
        # asks for them (for transaction-mode poolers). This path runs the
        # same few statements all the time, so it keeps psycopg's default
        # (prepare after 5 uses); OPTIONS["prepare_threshold"] = None turns
        # it off here too.
        params.pop("prepare_threshold", None)
    params["autocommit"] = True
    return params


class LeanPool:
    """At most ``size`` autocommit connections, lent to one task at a time."""

    def __init__(self, alias: str, size: int, wait_timeout: float) -> None:
        self.alias = alias
        self.size = size
        self.wait_timeout = wait_timeout
        self._idle: list[psycopg.AsyncConnection[Any]] = []
        self._waiters: deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = deque()
        self._opened = 0  # connections open or opening
        self.closed = False

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        conn = await self.acquire()
        try:
            yield conn
        finally:
            self.release(conn)

    async def acquire(self) -> psycopg.AsyncConnection[Any]:
        while True:
            if self._idle:
                return self._idle.pop()
            if self._opened < self.size:
                self._opened += 1
                try:
                    conn: psycopg.AsyncConnection[Any] = await psycopg.AsyncConnection.connect(
                        **connection_kwargs(self.alias)
                    )
                    return conn
                except BaseException:
                    self._opened -= 1
                    self._wake_one(None)
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                conn = await asyncio.wait_for(waiter, self.wait_timeout)
            except TimeoutError:
                raise BackendError(
                    f"PostgreSQL: all {self.size} pooled connections stayed busy for {self.wait_timeout}s"
                ) from None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled() and waiter.result() is not None:
                    self.release(waiter.result())  # handed over just as we were cancelled
                raise
            if conn is not None:
                return conn
            # None: a connection was dropped, so there is room to open one.

    def release(self, conn: psycopg.AsyncConnection[Any]) -> None:
        if (
            self.closed
            or conn.closed
            or conn.broken
            or conn.info.transaction_status != TransactionStatus.IDLE
        ):
            self._opened -= 1
            if not conn.closed:
                asyncio.get_running_loop().create_task(conn.close())
            self._wake_one(None)
            return
        if not self._wake_one(conn):
            self._idle.append(conn)

    def _wake_one(self, conn: psycopg.AsyncConnection[Any] | None) -> bool:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    async def close(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, []
        self._opened -= len(idle)
        for conn in idle:
            await conn.close()


def get_pool(alias: str, size: int, wait_timeout: float) -> LeanPool:
    """The pool for ``alias`` in the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    per_loop = _pools.setdefault(alias, weakref.WeakKeyDictionary())
    pool = per_loop.get(loop)
    if pool is None:
        pool = per_loop[loop] = LeanPool(alias, size, wait_timeout)
    return pool


async def close_pools(alias: str | None = None) -> None:
    """Close the running event loop's pools, of one alias or all (at shutdown, or between tests)."""
    loop = asyncio.get_running_loop()
    for pool_alias, per_loop in _pools.items():
        if alias is None or alias == pool_alias:
            pool = per_loop.pop(loop, None)
            if pool is not None:
                await pool.close()


class PostgresAsyncPath:
    """Runs the store's statements over the alias' pool; errors become the contract's.

    Written out flat (no context managers per call): at a few hundred
    microseconds an operation, their generator frames showed up in the
    benchmark.
    """

    def __init__(self, alias: str, size: int, timeout: float) -> None:
        self.alias = alias
        self.size = size
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: LeanPool | None = None

    def pool(self) -> LeanPool:
        loop = asyncio.get_running_loop()
        if loop is not self._loop or self._pool is None or self._pool.closed:
            self._pool, self._loop = get_pool(self.alias, self.size, self.timeout), loop
        return self._pool

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        pool = self.pool()
        try:
            conn = await pool.acquire()
            try:
                await conn.execute(sql, params)
            finally:
                pool.release(conn)
        except (psycopg.Error, OSError) as exc:
            raise _translated(exc) from exc

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        pool = self.pool()
        try:
            conn = await pool.acquire()
            try:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchone()
            finally:
                pool.release(conn)
        except (psycopg.Error, OSError) as exc:
            raise _translated(exc) from exc

    async def fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:
            async with self.pool().connection() as conn:
                cursor = await conn.execute(sql, params)
                return await cursor.fetchall()
        except (psycopg.Error, OSError) as exc:
            raise _translated(exc) from exc

    async def in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run several statements in one transaction (the batch calls)."""
        try:
            async with self.pool().connection() as conn, conn.transaction():
                for sql, params in statements:
                    await conn.execute(sql, params)
        except (psycopg.Error, OSError) as exc:
            raise _translated(exc) from exc

    async def save_many(self, sql: SessionSQL, records: Sequence[SessionRecord]) -> None:
        await self.in_transaction([(sql.upsert_array, column_params(c)) for c in chunks(records, ARRAY_ROWS)])  # type: ignore[misc]

    async def load_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for chunk in chunks(ids, ARRAY_ROWS):
            rows += await self.fetchall(sql.select_any, (list(chunk),))  # type: ignore[arg-type]
        return rows

    async def delete_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> None:
        await self.in_transaction([(sql.delete_any, (list(c),)) for c in chunks(ids, ARRAY_ROWS)])  # type: ignore[misc]

    async def aclose(self) -> None:
        await close_pools(self.alias)


def _translated(exc: BaseException) -> Exception:
    if isinstance(exc, psycopg.IntegrityError):
        return ConflictError(f"PostgreSQL: {exc}")
    return BackendError(f"PostgreSQL: {type(exc).__name__}: {exc}")
