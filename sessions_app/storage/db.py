"""Stores backed by the ``ExecutionSession`` table through Django's database layer.

``SyncDjangoSessionStore`` runs each operation as one SQL statement on
Django's own connection for the alias; sync callers (DRF views, management
commands, Celery tasks) use it directly and pay no event-loop round trip.
``DjangoSessionStore`` is the async contract: on PostgreSQL and SQLite it
runs the same SQL over the native paths beside this module
(``db_postgresql.py``, ``db_sqlite.py``), elsewhere over the sync store
through ``sync_to_async``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db import Error as DjangoDatabaseError

from .base import SessionStore
from .errors import BackendError, ConflictError, NotFound
from .sql import (
    BATCH_ROWS,
    SessionSQL,
    chunks,
    decode_row,
    dedupe_last_wins,
    flat_params,
    record_params,
    records_by_id,
    session_sql,
    unique_ids,
)
from .types import SessionId, SessionRecord, check_record

logger = logging.getLogger("sessions_app.storage")

T = TypeVar("T")


# How often an operation runs when the database aborts it as a deadlock
# victim or a serialization failure (seen on MySQL/MariaDB under contention).
TRANSIENT_RETRIES = 3
_TRANSIENT_MYSQL_CODES = {1205, 1213}  # lock wait timeout, deadlock
_TRANSIENT_SQLSTATES = {"40001", "40P01"}  # serialization failure, deadlock detected


def is_transient(exc: BaseException) -> bool:
    """Whether the database aborted the statement for a concurrency reason, so that a retry may succeed."""
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[Any, ...] = tuple(getattr(cause, "args", ()))
    return bool(args) and args[0] in _TRANSIENT_MYSQL_CODES


class SyncDjangoSessionStore:
    """The store's contract for synchronous callers, on the Django database ``using``.

    - ``save`` is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``,
      ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB), never read-then-write, so
      concurrent saves of one id never raise and leave exactly one row;
    - ``load`` is one ``SELECT`` by primary key, ``NotFound`` when absent;
    - ``delete`` is one ``DELETE``, which succeeds when nothing matches.

    Database errors reach the caller as ``BackendError`` (``ConflictError``
    for an integrity violation) with the driver's error chained; after a
    failure an unusable connection is closed, so the next call reconnects
    once the server is back.

    ``model`` may be any concrete subclass of ``AbstractExecutionSession``.
    """

    def __init__(self, using: str = DEFAULT_DB_ALIAS, *, model: type | None = None) -> None:
        if model is None:
            from ..models import ExecutionSession

            model = ExecutionSession
        self.using = using
        self.model = model

    def __repr__(self) -> str:
        return f"{type(self).__name__}(using={self.using!r}, model={self.model.__name__})"

    # -- the contract ------------------------------------------------------

    def save(self, record: SessionRecord) -> None:
        params = record_params(check_record(record))
        self._run(lambda sql, cursor: cursor.execute(sql.upsert_one, params))

    def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        params = (bytes(session_id),)

        def select(sql: SessionSQL, cursor: Any) -> Any:
            cursor.execute(sql.select_one, params)
            return cursor.fetchone()

        row = self._run(select)
        if row is None:
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, *row)

    def delete(self, session_id: SessionId) -> None:
        params = (bytes(SessionId(session_id)),)
        self._run(lambda sql, cursor: cursor.execute(sql.delete_one, params))

    # -- beyond the contract -------------------------------------------------

    def insert(self, record: SessionRecord) -> None:
        """Create ``record``; ``ConflictError`` if its id exists. One ``INSERT``."""
        params = record_params(check_record(record))
        self._run(lambda sql, cursor: cursor.execute(sql.insert, params), atomic=True)

    def upsert(self, record: SessionRecord) -> bool:
        """``save`` that also tells whether the record was created (``True``) or replaced.

        On PostgreSQL one statement answers both (``RETURNING xmax = 0``).
        Elsewhere, in one transaction: insert if absent, and update if that
        inserted nothing. The first statement is a write, so the transaction
        holds the write lock (SQLite) or the row lock (MySQL) from its start
        and no other writer can slip between the two.
        """
        params = record_params(check_record(record))

        def upsert(sql: SessionSQL, cursor: Any) -> bool:
            if sql.upsert_reporting_insert:
                cursor.execute(sql.upsert_reporting_insert, params)
                return bool(cursor.fetchone()[0])
            cursor.execute(sql.insert_if_absent, params)
            if cursor.rowcount == 1:
                return True
            session_id, agent_id, stored_start = params
            cursor.execute(sql.update_one, (agent_id, stored_start, session_id))
            return False

        return self._run(upsert, atomic=True)

    def save_many(self, records: Iterable[SessionRecord]) -> None:
        """Save every record in one statement per ``BATCH_ROWS``, all in one transaction."""
        unique = dedupe_last_wins(check_record(record) for record in records)

        def upsert_all(sql: SessionSQL, cursor: Any) -> None:
            for chunk in chunks(unique, BATCH_ROWS):
                cursor.execute(sql.upsert(len(chunk)), flat_params(chunk))

        if unique:
            self._run(upsert_all, atomic=True)

    def load_many(self, session_ids: Iterable[bytes]) -> dict[SessionId, SessionRecord]:
        """The records that exist among ``session_ids``; absent ids are simply missing."""
        wanted = unique_ids(session_ids)

        def select_all(sql: SessionSQL, cursor: Any) -> list[Any]:
            rows: list[Any] = []
            for chunk in chunks(wanted, BATCH_ROWS):
                cursor.execute(sql.select_many(len(chunk)), chunk)
                rows.extend(cursor.fetchall())
            return rows

        rows = self._run(select_all) if wanted else []
        return records_by_id(rows)

    def delete_many(self, session_ids: Iterable[bytes]) -> None:
        """Delete every listed id, one statement per ``BATCH_ROWS``, in one transaction."""
        doomed = unique_ids(session_ids)

        def delete_all(sql: SessionSQL, cursor: Any) -> None:
            for chunk in chunks(doomed, BATCH_ROWS):
                cursor.execute(sql.delete_many(len(chunk)), chunk)

        if doomed:
            self._run(delete_all, atomic=True)

    # -- plumbing ----------------------------------------------------------

    def _run(self, operation: Callable[[SessionSQL, Any], T], *, atomic: bool = False) -> T:
        connection = connections[self.using]
        with backend_errors(connection, repr(self)):
            sql = session_sql(self.model, connection.vendor, self.using)
            for attempt in range(1, TRANSIENT_RETRIES + 1):
                try:
                    if atomic:
                        with transaction.atomic(using=self.using), connection.cursor() as cursor:
                            return operation(sql, cursor)
                    with connection.cursor() as cursor:
                        return operation(sql, cursor)
                except DjangoDatabaseError as exc:
                    # Each operation is one statement or one transaction of
                    # its own, so running it again after the database chose
                    # it as a deadlock victim is safe, unless the caller's
                    # own transaction was rolled back with it.
                    if attempt == TRANSIENT_RETRIES or connection.in_atomic_block or not is_transient(exc):
                        raise
                    logger.info("%r: retrying after a transient database error: %s", self, exc)
        raise AssertionError("unreachable")


class DjangoSessionStore(SessionStore):
    """The async ``SessionStore`` over the model's table on the Django database ``using``.

    Each call is one SQL statement (batches: one per chunk), the same SQL
    as ``SyncDjangoSessionStore``, on the fastest path the database offers:

    - PostgreSQL with psycopg 3: natively async, over a small
      pool per event loop (``storage/db_postgresql.py``);
    - SQLite: a dedicated thread that owns one connection
      (``storage/db_sqlite.py``);
    - otherwise (or ``native_async=False``): Django's own connection through
      ``sync_to_async``.

    Every path is configured by ``DATABASES[using]`` alone and passes the
    conformance routine. The native paths use their own connections, so a
    call does not join a transaction the caller opened with ``atomic()``.
    ``self.sync`` is the same store for synchronous callers.
    """

    def __init__(
        self,
        using: str = DEFAULT_DB_ALIAS,
        *,
        model: type | None = None,
        native_async: bool | None = None,
    ) -> None:
        self.sync = SyncDjangoSessionStore(using, model=model)
        self.using = using
        self.model = self.sync.model
        self._native_async = native_async
        self._path: Any = None
        self._sql: SessionSQL | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(using={self.using!r}, model={self.model.__name__})"

    @property
    def path_name(self) -> str:
        """Which path this store's calls take: ``PostgresAsyncPath``, ``SQLitePath`` or ``sync_to_async``."""
        self._choose_path()
        return type(self._path).__name__ if self._path is not None else "sync_to_async"

    def _choose_path(self) -> None:
        if self._sql is not None:
            return
        from ..conf import app_settings

        wrapper = connections[self.using]
        native = app_settings.NATIVE_ASYNC if self._native_async is None else self._native_async
        if native and wrapper.vendor == "postgresql":
            try:
                from .db_postgresql import PostgresAsyncPath
            except ImportError:  # psycopg2 only: no asyncio support
                logger.info("psycopg 3 is not installed; %r uses sync_to_async", self)
            else:
                self._path = PostgresAsyncPath(self.using, app_settings.POOL_SIZE, app_settings.POOL_TIMEOUT)
        elif native and wrapper.vendor == "sqlite":
            from .db_sqlite import SQLitePath

            self._path = SQLitePath(self.using)
        self._sql = session_sql(self.model, wrapper.vendor, self.using)

    # -- the contract ------------------------------------------------------

    async def save(self, record: SessionRecord) -> None:
        params = record_params(check_record(record))
        self._choose_path()
        if self._path is None:
            return await sync_to_async(self.sync.save)(record)
        await self._path.execute(self._sql.upsert_one, params)  # type: ignore[union-attr]

    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        self._choose_path()
        if self._path is None:
            return await sync_to_async(self.sync.load)(session_id)
        row = await self._path.fetchone(self._sql.select_one, (bytes(session_id),))  # type: ignore[union-attr]
        if row is None:
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, *row)

    async def delete(self, session_id: SessionId) -> None:
        params = (bytes(SessionId(session_id)),)
        self._choose_path()
        if self._path is None:
            return await sync_to_async(self.sync.delete)(session_id)
        await self._path.execute(self._sql.delete_one, params)  # type: ignore[union-attr]

    # -- batches -----------------------------------------------------------

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        unique = dedupe_last_wins(check_record(record) for record in records)
        self._choose_path()
        if not unique:
            return
        if self._path is None:
            return await sync_to_async(self.sync.save_many)(unique)
        await self._path.save_many(self._sql, unique)

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = unique_ids(session_ids)
        self._choose_path()
        if not wanted:
            return {}
        if self._path is None:
            return await sync_to_async(self.sync.load_many)(wanted)
        rows = await self._path.load_many(self._sql, wanted)
        return records_by_id(rows)

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        doomed = unique_ids(session_ids)
        self._choose_path()
        if not doomed:
            return
        if self._path is None:
            return await sync_to_async(self.sync.delete_many)(doomed)
        await self._path.delete_many(self._sql, doomed)

    async def aclose(self) -> None:
        """Close this event loop's PostgreSQL pools (a no-op on the other paths)."""
        if self._path is not None:
            await self._path.aclose()


@contextmanager
def backend_errors(connection: Any, where: str) -> Iterator[None]:
    """Translate database errors into the contract's errors, with the cause chained.

    An integrity violation is a ``ConflictError``; every other database,
    driver or socket error is a ``BackendError``, after which a connection
    left unusable is closed so that the next call reconnects.
    """
    try:
        yield
    except IntegrityError as exc:
        raise ConflictError(f"{where}: {exc}") from exc
    except (DjangoDatabaseError, connection.Database.Error, OSError) as exc:
        _discard_if_broken(connection)
        raise BackendError(f"{where}: database error: {exc}") from exc


def _discard_if_broken(connection: Any) -> None:
    """Drop a connection that failed so the next call opens a fresh one."""
    if connection.in_atomic_block:
        return  # the caller's transaction owns the connection
    try:
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except Exception:  # closing a dead connection may itself fail
        logger.debug("closing a failed connection raised", exc_info=True)
        connection.connection = None
