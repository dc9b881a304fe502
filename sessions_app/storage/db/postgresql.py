"""The native async path to PostgreSQL: psycopg 3's ``AsyncConnection``, a lean pool per event loop.

Why not Django's async ORM: every query it runs hops to a worker thread,
and that hop costs more than half of what the query itself costs on a
local server. psycopg 3 speaks asyncio natively, so the event loop waits on
the socket directly, and concurrent tasks have up to ``POOL_SIZE`` queries
in flight at once.

``LeanPool`` is hand-written rather than psycopg_pool: ``benchmarks/store_bench.py``
measures psycopg_pool beside it ("raw async driver, pool of 16").
It keeps what psycopg_pool gives that this path needs:

- at most ``size`` connections, waiters served first come first served,
  each wait bounded by ``POOL_TIMEOUT``; a cancelled waiter gives back a
  connection handed to it;
- a connection is checked before it is lent (a closed socket or one with
  unread data, such as the server's goodbye, is dropped) and a connection
  left in a transaction or broken is never lent again;
- every connection attempt is bounded by ``OPTIONS["connect_timeout"]``
  (``CONNECT_TIMEOUT`` when unset), as Django's own connections are;
- the store's statements are idempotent, so a call that meets a dead
  connection it was lent drops every idle one (a restarted server dropped
  them all) and runs again on a new connection: no burst of failures after
  a restart. A call made while the server is down fails with
  ``BackendError`` as soon as the new connection is refused. A write that
  answers (the upsert telling created from replaced, a transaction
  counting the rows it touched) is not run again once
  it was sent: its connection lost mid-call, it may have committed with its
  answer lost, and a second run would answer "replaced" for the row the
  first created; it fails with ``BackendError`` instead (the outcome
  unknown, as for any call whose answer was lost), never with a wrong
  answer. A connection that died before the call is found at lending;
- lifecycle: a pool belongs to one event loop and is closed, server-side,
  when ``asyncio.run()`` shuts that loop down (an async generator the loop
  finalises), by ``aclose()``, and at interpreter exit. In a child made by
  ``os.fork()`` the inherited connections are let go without a word to the
  server (their sockets are pointed at ``/dev/null`` first), so the parent's
  sessions live on; the child opens its own.

Connections open with the alias' ``get_connection_params()`` (``NAME``,
``USER``, ``HOST``, ``OPTIONS`` ...), in autocommit mode, then apply
``OPTIONS["assume_role"]`` and ``OPTIONS["isolation_level"]`` as Django's
own connections do.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import select
import weakref
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from django.db import connections
from psycopg import sql as psycopg_sql
from psycopg.conninfo import make_conninfo
from psycopg.pq import TransactionStatus

from ..metrics import pool_changed, pool_gauges_reset
from .errors import TRANSIENT_RETRIES, is_transient, translated
from .sql import Row, Statement, check_refusals

logger = logging.getLogger("sessions_app.storage")

T = TypeVar("T")
Connection = psycopg.AsyncConnection[tuple[object, ...]]
Cursor = psycopg.AsyncCursor[tuple[object, ...]]

CONNECT_TIMEOUT = 10
"""Seconds a connection attempt may take when ``OPTIONS`` sets no ``connect_timeout``."""

# Django-specific keys of get_connection_params() that psycopg does not take.
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "pool", "server_side_binding", "prepare_threshold")

_PG_ERRORS = (psycopg.Error, OSError)


@dataclass(frozen=True)
class ConnectSpec:
    """How to open one connection for an alias, read from Django's settings for it.

    Server-side prepared statements are off unless ``OPTIONS["prepare_threshold"]``
    asks for them, as on Django's own connections: behind a pooler in
    transaction mode (PgBouncer's ``pool_mode = transaction``) each
    transaction may run on another server connection, where a statement this
    connection prepared does not exist or another client's of the same name
    does, and the call fails. Connected straight to PostgreSQL (or through a
    pooler that tracks prepared statements, PgBouncer 1.21+ with
    ``max_prepared_statements``), ``OPTIONS["prepare_threshold"] = 5`` makes
    psycopg prepare each statement after five uses; ``None`` (or no key)
    keeps them off. ``tests/test_pgbouncer.py`` runs the store and the API
    behind a real PgBouncer.
    """

    conninfo: str
    prepare_threshold: int | None
    role: str | None
    isolation_level: psycopg.IsolationLevel | None

    @classmethod
    def for_alias(cls, alias: str) -> ConnectSpec:
        wrapper = connections[alias]
        options = wrapper.settings_dict["OPTIONS"]
        params = wrapper.get_connection_params()
        for key in _DJANGO_ONLY_PARAMS:
            params.pop(key, None)
        params.setdefault("connect_timeout", CONNECT_TIMEOUT)
        level = options.get("isolation_level")
        return cls(
            conninfo=make_conninfo("", **params),
            # Off unless OPTIONS asks (Django's default): safe behind PgBouncer.
            prepare_threshold=options.get("prepare_threshold"),
            role=options.get("assume_role") or None,
            isolation_level=None if level is None else psycopg.IsolationLevel(level),
        )

    async def connect(self) -> Connection:
        conn: Connection = await psycopg.AsyncConnection.connect(
            self.conninfo, autocommit=True, prepare_threshold=self.prepare_threshold
        )
        try:
            if self.role:
                await conn.execute(psycopg_sql.SQL("SET ROLE {}").format(psycopg_sql.Identifier(self.role)))
            if self.isolation_level is not None:
                await conn.set_isolation_level(self.isolation_level)
        except BaseException:
            await conn.close()
            raise
        return conn


class _TimedOut:
    """A waiter's result when its deadline passed first."""


_TIMED_OUT = _TimedOut()


class LeanPool:
    """At most ``size`` autocommit connections of one event loop, lent to one task at a time."""

    def __init__(self, spec: ConnectSpec, size: int, wait_timeout: float) -> None:
        self.spec = spec
        self.size = size
        self.wait_timeout = wait_timeout
        self.closed = False
        self.disowned = False
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()  # idle or lent
        # One cursor per connection for the single statements: a new cursor per
        # call (what conn.execute() makes) costs about a fifth of a key lookup.
        self._cursors: dict[Connection, Cursor] = {}
        self._opening = 0
        # FIFO, so deadlines in order; one timer for the oldest, not one per waiter.
        self._waiters: deque[tuple[float, asyncio.Future[Connection | _TimedOut | None]]] = deque()
        self._expiry: asyncio.TimerHandle | None = None
        self._shutdown_hook: AsyncIterator[None] | None = None

    @property
    def in_use(self) -> int:
        return len(self._open) - len(self._idle)

    @property
    def open_count(self) -> int:
        return len(self._open)

    def lend_idle(self) -> Connection | None:
        """An idle connection that looks alive, lent at once; ``None`` if there is none."""
        while self._idle:
            conn = self._idle.pop()
            if _looks_alive(conn):
                pool_changed(lent=1)
                return conn
            self._drop(conn)
        return None

    def cursor(self, conn: Connection) -> Cursor:
        """The cursor kept for ``conn`` (made on first use, dropped with the connection)."""
        cursor = self._cursors.get(conn)
        if cursor is None:
            cursor = self._cursors[conn] = conn.cursor()
        return cursor

    async def acquire(self) -> tuple[Connection, bool]:
        """A connection and whether it served an earlier call (``False``: just opened)."""
        while True:
            if (idle := self.lend_idle()) is not None:
                return idle, True
            if len(self._open) + self._opening < self.size:
                conn = await self._connect()
                pool_changed(lent=1)
                return conn, False
            loop = asyncio.get_running_loop()
            waiter: asyncio.Future[Connection | _TimedOut | None] = loop.create_future()
            deadline = loop.time() + self.wait_timeout
            self._waiters.append((deadline, waiter))
            if self._expiry is None:
                self._expiry = loop.call_at(deadline, self._expire)
            try:
                # The task awaits the waiter itself (no wait_for, no
                # asyncio.timeout: a timer per wait cost about as much as a
                # key lookup's Python code). Whatever comes first, a
                # connection, room to open one or the deadline, is its result.
                handed = await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    # Handed over just as we were cancelled: pass it on.
                    given = waiter.result()
                    if isinstance(given, _TimedOut):
                        pass  # nothing was given
                    elif given is not None:
                        pool_changed(lent=1)
                        self.release(given)
                    else:
                        self._wake_one(None)
                raise
            if isinstance(handed, _TimedOut):
                raise psycopg.OperationalError(
                    f"all {self.size} pooled connections stayed busy for {self.wait_timeout}s"
                )
            if handed is not None:
                pool_changed(lent=1)
                return handed, True
            # None: a connection was dropped, so there is room to open one.

    async def _connect(self) -> Connection:
        self._opening += 1
        try:
            conn = await self.spec.connect()
        except BaseException:
            self._wake_one(None)
            raise
        finally:
            self._opening -= 1
        self._open.add(conn)
        pool_changed(opened=1)
        return conn

    def release(self, conn: Connection) -> None:
        if self.disowned:  # lent before a fork: this process never counted it
            return
        pool_changed(lent=-1)
        if self.closed or conn.closed or conn.pgconn.transaction_status != TransactionStatus.IDLE:
            self._drop(conn)
            self._wake_one(None)
        elif not self._wake_one(conn):
            self._idle.append(conn)

    def drop_idle(self) -> None:
        """Drop every idle connection (after one of them turned out dead)."""
        idle, self._idle = self._idle, []
        for conn in idle:
            self._drop(conn)

    def _drop(self, conn: Connection) -> None:
        self._cursors.pop(conn, None)
        if conn in self._open:
            self._open.remove(conn)
            pool_changed(opened=-1)
        _finish(conn)

    def _wake_one(self, conn: Connection | None) -> bool:
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return True
        return False

    def _expire(self) -> None:
        """Time out every waiter past its deadline; the timer again for the oldest left."""
        self._expiry = None
        now = asyncio.get_running_loop().time()
        while self._waiters:
            deadline, waiter = self._waiters[0]
            if waiter.done():  # cancelled
                self._waiters.popleft()
            elif deadline <= now:
                self._waiters.popleft()
                waiter.set_result(_TIMED_OUT)
            else:
                self._expiry = asyncio.get_running_loop().call_at(deadline, self._expire)
                return

    async def close(self) -> None:
        """Close the idle connections now and the lent ones when they come back."""
        self.closed = True
        self.drop_idle()
        while self._waiters:
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def close_now(self) -> None:
        """Close every connection, lent or not, from any thread (its loop is gone, or the process ends)."""
        self.closed = True
        self._idle = []
        for conn in list(self._open):
            self._drop(conn)
        self._cursors.clear()

    def disown(self) -> None:
        """In a forked child: let every inherited connection go without ending the parent's session."""
        self.closed = True
        self.disowned = True
        devnull = os.open(os.devnull, os.O_RDWR)
        try:
            for conn in self._open:
                with contextlib.suppress(Exception):
                    # libpq's goodbye (and TLS close_notify) now goes to /dev/null.
                    os.dup2(devnull, conn.pgconn.socket)
                    conn.pgconn.finish()
        finally:
            os.close(devnull)
        self._open.clear()
        self._cursors.clear()
        self._idle = []
        while self._waiters:  # tasks of the parent's loop, if the child runs it: they fail, not hang
            _, waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(_TIMED_OUT)
        self._expiry = None  # the parent's loop's timer: never runs here


def _looks_alive(conn: Connection) -> bool:
    """An idle connection is silent; a closed socket, or data the server sent unasked, is not."""
    if conn.closed:
        return False
    try:
        poller = select.poll()
        poller.register(conn.pgconn.socket, select.POLLIN)
        return not poller.poll(0)
    except (OSError, ValueError, psycopg.Error):
        return False


def _finish(conn: Connection) -> None:
    """Close synchronously: ``AsyncConnection.close()`` does only this, and needs no event loop."""
    with contextlib.suppress(Exception):
        conn.pgconn.finish()


async def _close_with_loop(pool: LeanPool) -> AsyncIterator[None]:
    """Held open for the life of the loop; ``asyncio.run()`` finalises it, which closes the pool."""
    try:
        yield
    finally:
        await pool.close()


class PostgresPath:
    """Runs the store's statements over the calling event loop's pool for the alias."""

    name = "PostgresPath"

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.where = f"PostgreSQL {alias!r}"
        self._pools: dict[asyncio.AbstractEventLoop, LeanPool] = {}
        _live_paths.add(self)

    def pool_for_running_loop(self) -> LeanPool | None:
        return self._pools.get(asyncio.get_running_loop())

    def pools(self) -> list[LeanPool]:
        return list(self._pools.values())

    def _live_pool(self) -> LeanPool | None:
        """The calling event loop's pool if it is open (no coroutine: every call asks)."""
        pool = self._pools.get(asyncio.get_running_loop())
        return None if pool is None or pool.closed else pool

    async def _pool(self) -> LeanPool:
        return self._live_pool() or await self._open_pool(asyncio.get_running_loop())

    async def _open_pool(self, loop: asyncio.AbstractEventLoop) -> LeanPool:
        from ...conf import app_settings

        for other_loop, other in list(self._pools.items()):
            # Closed without asyncio.run()'s shutdown: close its pool here (pop: a thread may race us).
            if other_loop.is_closed() and self._pools.pop(other_loop, None) is other:
                other.close_now()
        pool = LeanPool(ConnectSpec.for_alias(self.alias), app_settings.POOL_SIZE, app_settings.POOL_TIMEOUT)
        hook = _close_with_loop(pool)
        await anext(hook)  # registers it with the loop's async-generator finaliser
        pool._shutdown_hook = hook
        self._pools[loop] = pool
        return pool

    async def run(self, work: Callable[[Connection, Cursor], Awaitable[T]], *, resend: bool = True) -> T:
        """``work(connection)`` on a pooled connection; retried on a dead connection or a deadlock.

        ``resend=False``: not after its connection died during the call (the
        work may have been done); a deadlock or serialization failure, which
        the server rolled back, is retried all the same.
        """
        pool = self._live_pool() or await self._pool()
        attempt = 0
        while True:
            attempt += 1
            conn, reused = pool.lend_idle(), True
            if conn is None:
                try:
                    conn, reused = await pool.acquire()
                except _PG_ERRORS as exc:
                    raise translated(exc, self.where) from exc
            try:
                return await work(conn, pool.cursor(conn))
            except _PG_ERRORS as exc:
                failure: BaseException = exc
            finally:
                pool.release(conn)
            if reused and conn.closed and attempt == 1:
                # The server dropped it (a restart, a failover, a proxy's
                # idle timeout): so, probably, every idle one. Start afresh.
                logger.info("%s: a pooled connection was dead (%s); reconnecting", self.where, failure)
                pool.drop_idle()
                if resend:
                    continue
            if is_transient(failure) and attempt < TRANSIENT_RETRIES:
                logger.info("%s: retrying after a transient error: %s", self.where, failure)
                continue
            raise translated(failure, self.where) from failure

    async def execute(self, statement: Statement) -> int:
        return await self.run(lambda conn, cursor: _execute(cursor, statement))

    async def fetchone(self, statement: Statement) -> Row | None:
        if _reads_only(statement):
            return await self.run(lambda conn, cursor: _fetchone(cursor, statement))
        # A write that answers (the upsert reporting whether it created), in
        # autocommit as any statement, but not sent twice (module docstring).
        return await self.run(lambda conn, cursor: _fetchone(cursor, statement), resend=False)

    async def fetchall(self, statements: Sequence[Statement]) -> list[Row]:
        return await self.run(lambda conn, cursor: _fetchall(conn, statements))

    async def in_transaction(
        self, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
    ) -> int:
        # It answers a count (the rows a batch deleted): not sent twice either.
        return await self.run(
            lambda conn, cursor: _in_transaction(conn, statements, refuse_if_found), resend=False
        )

    async def aclose(self) -> None:
        """Close the calling event loop's pool, server-side; the next call opens a new one."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()


async def _execute(cursor: Cursor, statement: Statement) -> int:
    await cursor.execute(statement[0], statement[1])
    return cursor.rowcount


async def _fetchone(cursor: Cursor, statement: Statement) -> Row | None:
    await cursor.execute(statement[0], statement[1])
    return await cursor.fetchone()


def _reads_only(statement: Statement) -> bool:
    return statement[0].lstrip()[:6].upper() == "SELECT"


async def _fetchall(conn: Connection, statements: Sequence[Statement]) -> list[Row]:
    rows: list[Row] = []
    for sql, params in statements:
        cursor = await conn.execute(sql, params)
        rows += await cursor.fetchall()
    return rows


async def _in_transaction(
    conn: Connection, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
) -> int:
    touched = 0
    async with conn.transaction():
        for sql, params in statements:
            cursor = await conn.execute(sql, params)
            touched += cursor.rowcount
        if refuse_if_found:
            check_refusals(await _fetchall(conn, refuse_if_found))  # raising rolls back
    return touched


_live_paths: weakref.WeakSet[PostgresPath] = weakref.WeakSet()


async def close_loop_pools() -> None:
    """Close every pool of the running event loop (between tests, or before a loop ends by hand)."""
    for path in list(_live_paths):
        await path.aclose()


@atexit.register
def _close_at_exit() -> None:
    for path in list(_live_paths):
        for pool in path.pools():
            pool.close_now()


def _disown_after_fork() -> None:
    for path in list(_live_paths):
        for pool in path.pools():
            pool.disown()
        path._pools.clear()
    pool_gauges_reset()  # the child has no pooled connection of its own yet


os.register_at_fork(after_in_child=_disown_after_fork)
