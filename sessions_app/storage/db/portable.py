"""The portable path: the store's statements on Django's own connection.

``CursorRunner`` runs them in the calling thread (``SyncDjangoSessionStore``
and the REST API use it directly); ``ThreadedPath`` runs the same runner
through ``sync_to_async`` for the async store on databases without a native
path (MySQL, MariaDB, Oracle) or with ``NATIVE_ASYNC`` off. Django's
connection handling applies unchanged: ``CONN_MAX_AGE``, its pool, its
``OPTIONS``, a caller's ``atomic()`` block.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

from asgiref.sync import sync_to_async
from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from .errors import DRIVER_ERRORS, TRANSIENT_RETRIES, is_transient, translated
from .sql import Row, Statement, check_refusals

logger = logging.getLogger("sessions_app.storage")

T = TypeVar("T")


class CursorRunner:
    """Runs work on Django's connection for ``alias`` in the calling thread.

    A database error reaches the caller as the contract's error; after it a
    connection left unusable is closed, so the next call reconnects once the
    server is back. Work the database aborted as a deadlock victim runs
    again, up to ``TRANSIENT_RETRIES`` times, unless the caller's own
    transaction was rolled back with it.
    """

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def run(self, work: Callable[[CursorWrapper], T], *, atomic: bool = False) -> T:
        connection = connections[self.alias]
        with backend_errors(self.alias, f"database {self.alias!r}"):
            for attempt in range(1, TRANSIENT_RETRIES + 1):
                try:
                    if atomic:
                        with transaction.atomic(using=self.alias), connection.cursor() as cursor:
                            return work(cursor)
                    with connection.cursor() as cursor:
                        return work(cursor)
                except DRIVER_ERRORS as exc:
                    if attempt == TRANSIENT_RETRIES or connection.in_atomic_block or not is_transient(exc):
                        raise
                    logger.info("database %r: retrying after a transient error: %s", self.alias, exc)
        raise AssertionError("unreachable")

    def execute(self, statement: Statement) -> int:
        return self.run(lambda cursor: _execute(cursor, statement))

    def fetchone(self, statement: Statement) -> Row | None:
        def fetch(cursor: CursorWrapper) -> Row | None:
            cursor.execute(*statement)
            row = cursor.fetchone()
            return None if row is None else tuple(row)

        return self.run(fetch)

    def fetchall(self, statements: Sequence[Statement]) -> list[Row]:
        def fetch(cursor: CursorWrapper) -> list[Row]:
            rows: list[Row] = []
            for statement in statements:
                cursor.execute(*statement)
                rows.extend(tuple(row) for row in cursor.fetchall())
            return rows

        return self.run(fetch)

    def in_transaction(
        self, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
    ) -> int:
        def work(cursor: CursorWrapper) -> int:
            touched = sum(_execute(cursor, statement) for statement in statements)
            if refuse_if_found:
                found: list[Row] = []
                for statement in refuse_if_found:
                    cursor.execute(*statement)
                    found.extend(tuple(row) for row in cursor.fetchall())
                check_refusals(found)  # raising rolls the atomic block back
            return touched

        return self.run(work, atomic=True)


def _execute(cursor: CursorWrapper, statement: Statement) -> int:
    cursor.execute(*statement)
    touched: int = cursor.rowcount
    return touched


class ThreadedPath:
    """``CursorRunner`` through ``sync_to_async``: every database Django supports."""

    name = "sync_to_async"

    def __init__(self, alias: str) -> None:
        self.alias = alias
        self.runner = runner = CursorRunner(alias)
        self.execute = sync_to_async(runner.execute)
        self.fetchone = sync_to_async(runner.fetchone)
        self.fetchall = sync_to_async(runner.fetchall)
        self.in_transaction = sync_to_async(runner.in_transaction)

    async def aclose(self) -> None:
        """Close Django's connection in the thread these calls run in."""
        await sync_to_async(self._close_connection)()

    def _close_connection(self) -> None:
        connections[self.alias].close()  # looked up here: connections are per thread


@contextmanager
def backend_errors(alias: str, where: str) -> Iterator[None]:
    """Translate database errors raised inside into the contract's errors, with the cause chained.

    For code that runs its own queries on Django's connection (the REST
    API's list and partial update, the admin): an integrity violation is a
    ``ConflictError``, any other database, driver or socket error a
    ``BackendError``, after which a connection left unusable is closed so
    that the next call reconnects.
    """
    try:
        yield
    except DRIVER_ERRORS as exc:
        _discard_if_broken(connections[alias])
        raise translated(exc, where) from exc


def _discard_if_broken(connection: BaseDatabaseWrapper) -> None:
    """Drop a connection that failed so the next call opens a fresh one."""
    if connection.in_atomic_block:
        return  # the caller's transaction owns the connection
    try:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except Exception:  # closing a dead connection may itself fail
        logger.debug("closing a failed connection raised", exc_info=True)
        connection.connection = None
