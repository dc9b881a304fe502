"""The fast path to SQLite: one connection on one dedicated thread.

Why: SQLite has no async driver; something must run the call on a thread.
asgiref's ``sync_to_async`` costs about 64 us a hop and runs every call
through Django's cursor wrapper; SQLite answers a primary-key query in
less than that. Here a call is a plain function on the DB-API connection,
handed to the thread through a ``SimpleQueue`` and answered with
``call_soon_threadsafe``, the hand-off aiosqlite uses (about 45 us).
aiosqlite itself hands over statements, not functions, so a batch in one
transaction would take several hops and a lock against interleaving.

One thread per database alias, shared by every store and event loop in the
process: SQLite takes one writer at a time anyway. The connection opens
with the alias' own ``get_connection_params()`` and ``init_command``, in
autocommit mode, and reopens if the alias' ``NAME`` changes (as the test
runner does).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable, Sequence
from functools import lru_cache
from queue import SimpleQueue
from typing import Any, TypeVar

from django.db import connections

from .errors import BackendError, ConflictError
from .sql import BATCH_ROWS, SessionSQL, chunks, flat_params
from .types import SessionRecord

T = TypeVar("T")

_workers: dict[str, SQLiteWorker] = {}
_workers_lock = threading.Lock()


def get_worker(alias: str) -> SQLiteWorker:
    worker = _workers.get(alias)
    if worker is None:
        with _workers_lock:
            worker = _workers.setdefault(alias, SQLiteWorker(alias))
    return worker


def _resolve(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _reject(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


class SQLiteWorker:
    """A daemon thread that owns one sqlite3 connection and runs functions on it, in order."""

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self._queue: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = (
            SimpleQueue()
        )
        self._thread = threading.Thread(target=self._serve, name=f"sessions_app-sqlite-{alias}", daemon=True)
        self._thread.start()

    async def call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(connection, *args)`` on the worker thread and await its result."""
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put((function, args, future))
        return await future

    def _serve(self) -> None:
        connection: sqlite3.Connection | None = None
        name: Any = None
        while True:
            function, args, future = self._queue.get()
            loop = future.get_loop()
            try:
                wanted = connections.settings[self.alias]["NAME"]
                if connection is None or wanted != name:
                    if connection is not None:
                        connection.close()
                    connection, name = self._connect(), wanted
                result = function(connection, *args)
            except sqlite3.IntegrityError as exc:
                _post(loop, _reject, future, _chained(ConflictError(f"SQLite: {exc}"), exc))
            except (sqlite3.Error, OSError) as exc:
                if connection is not None:
                    connection.close()
                connection = None
                _post(
                    loop, _reject, future, _chained(BackendError(f"SQLite: {type(exc).__name__}: {exc}"), exc)
                )
            except BaseException as exc:
                _post(loop, _reject, future, exc)
            else:
                _post(loop, _resolve, future, result)

    def _connect(self) -> sqlite3.Connection:
        wrapper = connections[self.alias]
        params = wrapper.get_connection_params()
        params.pop("detect_types", None)  # plain ints and bytes are all this path reads
        connection: sqlite3.Connection = sqlite3.connect(**params, isolation_level=None)
        for command in getattr(wrapper, "init_commands", []):
            if command.strip():
                connection.execute(command)
        return connection


class SQLitePath:
    """The store's statements on the alias' worker thread.

    The SQL is written with Django's ``%s`` placeholders; sqlite3 wants
    ``?``, converted once per statement text.
    """

    def __init__(self, alias: str) -> None:
        self.worker = get_worker(alias)

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        await self.worker.call(_execute, _qmark(sql), params)

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        return await self.worker.call(_fetchone, _qmark(sql), params)

    async def save_many(self, sql: SessionSQL, records: Sequence[SessionRecord]) -> None:
        statements = [(_qmark(sql.upsert(len(c))), flat_params(c)) for c in chunks(records, BATCH_ROWS)]
        await self.worker.call(_in_transaction, statements)

    async def load_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> list[tuple[Any, ...]]:
        statements = [(_qmark(sql.select_many(len(c))), c) for c in chunks(ids, BATCH_ROWS)]
        return await self.worker.call(_fetch_all, statements)

    async def delete_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> None:
        statements = [(_qmark(sql.delete_many(len(c))), c) for c in chunks(ids, BATCH_ROWS)]
        await self.worker.call(_in_transaction, statements)

    async def aclose(self) -> None:
        """The worker thread lives as long as the process; nothing to release per store."""


@lru_cache(maxsize=256)
def _qmark(sql: str) -> str:
    return sql.replace("%s", "?")


def _execute(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> None:
    connection.execute(sql, params)


def _fetchone(connection: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Any:
    return connection.execute(sql, params).fetchone()


def _fetch_all(connection: sqlite3.Connection, statements: list[tuple[str, Sequence[Any]]]) -> list[Any]:
    rows: list[Any] = []
    for sql, params in statements:
        rows += connection.execute(sql, params).fetchall()
    return rows


def _in_transaction(connection: sqlite3.Connection, statements: list[tuple[str, Sequence[Any]]]) -> None:
    # IMMEDIATE takes the write lock up front, so the batch cannot fail
    # half-way for want of it; any error rolls the whole batch back.
    connection.execute("BEGIN IMMEDIATE")
    try:
        for sql, params in statements:
            connection.execute(sql, params)
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _post(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    with contextlib.suppress(RuntimeError):  # the caller's loop has closed: nobody waits any more
        loop.call_soon_threadsafe(callback, *args)


def _chained(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error
