"""The native path to SQLite: one sqlite3 connection on one dedicated thread per alias.

Hand-written rather than asgiref's ``sync_to_async`` or aiosqlite:
``benchmarks/store_bench.py`` measures both against it (see its module
docstring). A call is a plain function on the DB-API connection, handed to
the thread through a ``SimpleQueue`` and answered with
``call_soon_threadsafe``, the hand-off aiosqlite uses; unlike aiosqlite, a
batch in one transaction is one hop.

Lifecycle:

- the thread starts on the first call (never twice, however many callers
  race) and serves calls in order, from any number of event loops;
- ``aclose()`` closes the connection (the next call reopens it);
- at interpreter exit the thread finishes the calls already queued, closes
  the connection and stops, before the process goes;
- in a child made by ``os.fork()`` the parent's thread does not exist: the
  child starts a thread and a connection of its own on its first call.

The connection opens with the alias' own ``get_connection_params()`` and
``init_command``, in autocommit mode, and reopens if the alias' ``NAME``
changes (as the test runner does).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Sequence
from functools import lru_cache
from queue import SimpleQueue
from typing import TypeVar, cast

from django.db import connections

from .errors import translated
from .sql import Row, Statement, check_refusals

T = TypeVar("T")

# How long interpreter exit waits for the queued calls to finish.
EXIT_TIMEOUT = 10.0

Job = tuple[Callable[[sqlite3.Connection], object], asyncio.Future[object]]


class SQLiteWorker:
    """A daemon thread that owns one sqlite3 connection and runs functions on it, in order."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._reset()

    def _reset(self) -> None:
        self._queue: SimpleQueue[Job | None] = SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    async def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``function(connection)`` on the worker thread and await its result."""
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        if self._thread is None:
            self._start()
        self._queue.put((function, future))
        return cast(T, await future)

    async def close_connection(self) -> None:
        if self._thread is None:
            return
        done: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._queue.put((_close, done))
        await done

    def stop(self, timeout: float) -> None:
        """Finish the queued calls, close the connection and end the thread (at exit)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(
                    target=self._serve, name=f"sessions_app-sqlite-{self.alias}", daemon=True
                )
                thread.start()
                self._thread = thread

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        name: object = None
        while True:
            job = self._queue.get()
            if job is None:
                if connection is not None:
                    connection.close()
                return
            function, future = job
            if function is _close:
                if connection is not None:
                    connection.close()
                connection = None
                _post(future, _resolve, None)
                continue
            try:
                wanted = connections.settings[self.alias]["NAME"]
                if connection is None or wanted != name:
                    if connection is not None:
                        connection.close()
                    connection, name = self._connect(), wanted
                result = function(connection)
            except (sqlite3.Error, OSError) as exc:
                if connection is not None and not isinstance(exc, sqlite3.IntegrityError):
                    connection.close()
                    connection = None
                _post(future, _reject, translated(exc, f"SQLite {self.alias!r}"))
            except BaseException as exc:
                _post(future, _reject, exc)
            else:
                _post(future, _resolve, result)

    def _connect(self) -> sqlite3.Connection:
        wrapper = connections[self.alias]
        params = wrapper.get_connection_params()
        params.pop("detect_types", None)  # plain ints and bytes are all this path reads
        connection: sqlite3.Connection = sqlite3.connect(**params, isolation_level=None)
        for command in getattr(wrapper, "init_commands", []):
            if command.strip():
                connection.execute(command)
        return connection


_workers: weakref.WeakSet[SQLiteWorker] = weakref.WeakSet()


class SQLitePath:
    """The store's statements on the alias' worker thread.

    The SQL is written with Django's ``%s`` placeholders; sqlite3 wants
    ``?``, converted once per statement text.
    """

    name = "SQLitePath"

    def __init__(self, alias: str) -> None:
        self.worker = SQLiteWorker(alias)
        _workers.add(self.worker)

    async def execute(self, statement: Statement) -> int:
        sql, params = statement
        return await self.worker.call(lambda connection: connection.execute(_qmark(sql), params).rowcount)

    async def fetchone(self, statement: Statement) -> Row | None:
        sql, params = statement
        row: Row | None = await self.worker.call(
            lambda connection: connection.execute(_qmark(sql), params).fetchone()
        )
        return row

    async def fetchall(self, statements: Sequence[Statement]) -> list[Row]:
        return await self.worker.call(lambda connection: _fetch_all(connection, statements))

    async def in_transaction(
        self, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
    ) -> int:
        return await self.worker.call(
            lambda connection: _in_transaction(connection, statements, refuse_if_found)
        )

    async def aclose(self) -> None:
        """Close the thread's connection; the next call opens a new one."""
        await self.worker.close_connection()


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


def _fetch_all(connection: sqlite3.Connection, statements: Sequence[Statement]) -> list[Row]:
    rows: list[Row] = []
    for sql, params in statements:
        rows += connection.execute(_qmark(sql), params).fetchall()
    return rows


def _in_transaction(
    connection: sqlite3.Connection, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
) -> int:
    # IMMEDIATE takes the write lock up front, so the batch cannot fail
    # half-way for want of it; any error rolls the whole batch back.
    connection.execute("BEGIN IMMEDIATE")
    touched = 0
    try:
        for sql, params in statements:
            touched += connection.execute(_qmark(sql), params).rowcount
        check_refusals(_fetch_all(connection, refuse_if_found) if refuse_if_found else [])
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")
    return touched


def _close(connection: sqlite3.Connection) -> None:
    """Marks the job that closes the worker's connection (``aclose``); never called."""


def _resolve(future: asyncio.Future[object], result: object) -> None:
    if not future.done():
        future.set_result(result)


def _reject(future: asyncio.Future[object], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _post(
    future: asyncio.Future[object], callback: Callable[[asyncio.Future[object], T], None], value: T
) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits any more
        future.get_loop().call_soon_threadsafe(callback, future, value)


@atexit.register
def _stop_workers() -> None:
    for worker in list(_workers):
        worker.stop(EXIT_TIMEOUT)


def _forget_parent_threads() -> None:
    # The child has no worker threads (only the forking thread survives
    # fork()); a lock another thread held stays held forever. Start afresh.
    for worker in list(_workers):
        worker._reset()


os.register_at_fork(after_in_child=_forget_parent_threads)
