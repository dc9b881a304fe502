"""``DjangoSessionStore``: the store backed by the ``ExecutionSession`` table."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connections, transaction
from django.db import Error as DjangoDatabaseError

from .base import SessionStore
from .errors import BackendError, ConflictError, NotFound, StorageError
from .sql import SessionSQL, chunks, decode_row, dedupe_last_wins, flat_params, record_params, session_sql
from .types import SessionId, SessionRecord, check_record

logger = logging.getLogger("sessions_app.storage")

T = TypeVar("T")

# Rows per statement in the batch methods: 3 parameters a row stays under
# every supported database's parameter limit (SQLite's default is 32766).
BATCH_ROWS = 500


class DjangoSessionStore(SessionStore):
    """Stores records in the model's table on the Django database ``using``.

    Each operation is one SQL statement on Django's own connection for that
    alias, run through ``sync_to_async`` so the event loop never blocks:

    - ``save`` is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``,
      ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB), never read-then-write, so
      concurrent saves of one id never raise and leave exactly one row;
    - ``load`` is one ``SELECT`` by primary key;
    - ``delete`` is one ``DELETE``, which succeeds when nothing matches.

    Database errors reach the caller as ``BackendError`` (``ConflictError``
    for an integrity violation) with the driver's error chained; after a
    failure the connection is closed if unusable, so the next call
    reconnects once the server is back.

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

    async def save(self, record: SessionRecord) -> None:
        params = record_params(check_record(record))
        await self._run(lambda sql, cursor: cursor.execute(sql.upsert(), params))

    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        params = (bytes(session_id),)

        def select(sql: SessionSQL, cursor: Any) -> Any:
            cursor.execute(sql.select_one, params)
            return cursor.fetchone()

        row = await self._run(select)
        if row is None:
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, *row)

    async def delete(self, session_id: SessionId) -> None:
        params = (bytes(SessionId(session_id)),)
        await self._run(lambda sql, cursor: cursor.execute(sql.delete_one, params))

    # -- batches: one statement per chunk of BATCH_ROWS ---------------------

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        unique = dedupe_last_wins(check_record(record) for record in records)

        def upsert_all(sql: SessionSQL, cursor: Any) -> None:
            for chunk in chunks(unique, BATCH_ROWS):
                cursor.execute(sql.upsert(len(chunk)), flat_params(chunk))

        if unique:
            await self._run(upsert_all, atomic=True)

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = list(dict.fromkeys(bytes(SessionId(sid)) for sid in session_ids))

        def select_all(sql: SessionSQL, cursor: Any) -> list[Any]:
            rows: list[Any] = []
            for chunk in chunks(wanted, BATCH_ROWS):
                cursor.execute(sql.select_many(len(chunk)), chunk)
                rows.extend(cursor.fetchall())
            return rows

        rows = await self._run(select_all) if wanted else []
        records = (decode_row(bytes(sid), agent, start) for sid, agent, start in rows)
        return {record.session_id: record for record in records}

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        doomed = list(dict.fromkeys(bytes(SessionId(sid)) for sid in session_ids))

        def delete_all(sql: SessionSQL, cursor: Any) -> None:
            for chunk in chunks(doomed, BATCH_ROWS):
                cursor.execute(sql.delete_many(len(chunk)), chunk)

        if doomed:
            await self._run(delete_all, atomic=True)

    # -- plumbing ----------------------------------------------------------

    async def _run(self, operation: Callable[[SessionSQL, Any], T], *, atomic: bool = False) -> T:
        return await sync_to_async(self._run_sync)(operation, atomic)

    def _run_sync(self, operation: Callable[[SessionSQL, Any], T], atomic: bool) -> T:
        connection = connections[self.using]
        try:
            sql = session_sql(self.model, connection.vendor, self.using)
            if atomic:
                with transaction.atomic(using=self.using), connection.cursor() as cursor:
                    return operation(sql, cursor)
            with connection.cursor() as cursor:
                return operation(sql, cursor)
        except StorageError:
            raise
        except IntegrityError as exc:
            raise ConflictError(f"{self!r}: {exc}") from exc
        except DjangoDatabaseError as exc:
            _discard_if_broken(connection)
            raise BackendError(f"{self!r}: database error: {exc}") from exc
        except (connection.Database.Error, OSError) as exc:
            # Driver and socket errors that escape Django's wrapper still
            # belong to the backend.
            _discard_if_broken(connection)
            raise BackendError(f"{self!r}: {type(exc).__name__}: {exc}") from exc


def _discard_if_broken(connection: Any) -> None:
    """Drop a connection that failed so the next call opens a fresh one."""
    try:
        if connection.in_atomic_block:
            return
        connection.close_if_unusable_or_obsolete()
        if connection.connection is not None and not connection.is_usable():
            connection.close()
    except Exception:  # closing a dead connection may itself fail
        logger.debug("closing a failed connection raised", exc_info=True)
        connection.connection = None
