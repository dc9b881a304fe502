"""``SyncDjangoSessionStore``: the store's contract for synchronous callers."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from django.apps import apps
from django.db import models

from ..errors import NotFound
from ..metrics import timed
from ..types import SessionId, SessionRecord, check_record
from .portable import CursorRunner
from .sql import SessionSQL, decode_row, dedupe_last_wins, records_by_id, session_sql, unique_ids

PURGE_BATCH_SIZE = 10_000


def default_alias() -> str:
    from ...conf import app_settings

    alias: str = app_settings.DATABASE_ALIAS
    return alias


def default_model() -> type[models.Model]:
    return apps.get_model("sessions_app", "ExecutionSession")


class SyncDjangoSessionStore:
    """The store's contract for synchronous callers, on the Django database ``using``.

    - ``save`` is one atomic upsert (``INSERT ... ON CONFLICT DO UPDATE``,
      ``ON DUPLICATE KEY UPDATE`` on MySQL/MariaDB), never read-then-write, so
      concurrent saves of one id never raise and leave exactly one row;
    - ``load`` is one ``SELECT`` by primary key, ``NotFound`` when absent;
    - ``delete`` is one ``DELETE``, which succeeds when nothing matches.

    Each runs on Django's own connection for the alias in the calling
    thread (``db/portable.py``), so it joins a transaction the caller opened
    with ``atomic()``. ``using`` defaults to ``SESSIONS_APP["DATABASE_ALIAS"]``;
    ``model`` may be any concrete subclass of ``AbstractExecutionSession``.
    """

    def __init__(self, using: str | None = None, *, model: type[models.Model] | None = None) -> None:
        self.using = using or default_alias()
        self.model = model or default_model()
        self.runner = CursorRunner(self.using)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(using={self.using!r}, model={self.model.__name__})"

    @property
    def sql(self) -> SessionSQL:
        return session_sql(self.model, self.using)

    # -- the contract ------------------------------------------------------

    @timed("save")
    def save(self, record: SessionRecord) -> None:
        self.runner.execute(self.sql.save(check_record(record)))

    @timed("load")
    def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        row = self.runner.fetchone(self.sql.load(session_id))
        if row is None:
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, row[0], row[1])

    @timed("delete")
    def delete(self, session_id: SessionId) -> None:
        self.runner.execute(self.sql.delete(SessionId(session_id)))

    # -- beyond the contract -------------------------------------------------

    @timed("save")
    def insert(self, record: SessionRecord) -> None:
        """Create ``record``; ``ConflictError`` if its id exists. One ``INSERT``."""
        statement = self.sql.insert(check_record(record))
        self.runner.run(lambda cursor: cursor.execute(*statement), atomic=True)

    @timed("save")
    def upsert(self, record: SessionRecord) -> bool:
        """``save`` that also tells whether the record was created (``True``) or replaced.

        On PostgreSQL one statement answers both (``RETURNING xmax = 0``).
        Elsewhere one transaction inserts if absent, then updates
        (``SessionSQL.insert_then_update``), so no other writer can slip
        between the two.
        """
        record = check_record(record)
        reporting = self.sql.upsert_reporting_insert(record)
        if reporting is not None:
            row = self.runner.fetchone(reporting)
            return bool(row and row[0])
        return self.runner.in_transaction(self.sql.insert_then_update(record)) == 2

    @timed("save_many")
    def save_many(self, records: Iterable[SessionRecord]) -> int:
        """Save every record, all in one transaction; with repeated ids the last one wins.

        Returns how many distinct ids were saved.
        """
        unique = dedupe_last_wins(check_record(record) for record in records)
        if unique:
            self.runner.in_transaction(self.sql.save_batches(unique))
        return len(unique)

    @timed("load_many")
    def load_many(self, session_ids: Iterable[bytes]) -> dict[SessionId, SessionRecord]:
        """The records that exist among ``session_ids``; absent ids are simply missing."""
        wanted = unique_ids(session_ids)
        return records_by_id(self.runner.fetchall(self.sql.load_batches(wanted))) if wanted else {}

    @timed("delete_many")
    def delete_many(self, session_ids: Iterable[bytes]) -> int:
        """Delete every listed id, in one transaction; returns how many existed."""
        doomed = unique_ids(session_ids)
        return self.runner.in_transaction(self.sql.delete_batches(doomed)) if doomed else 0

    def count_before(self, cutoff_ns: int) -> int:
        """How many sessions started before ``cutoff_ns``."""
        row = self.runner.fetchone(self.sql.count_before(cutoff_ns))
        return int(str(row[0])) if row else 0

    @timed("purge")
    def purge_before(
        self,
        cutoff_ns: int,
        *,
        batch_size: int = PURGE_BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Delete the sessions that started before ``cutoff_ns``; return how many went.

        One ``DELETE`` of at most ``batch_size`` rows a transaction, chosen by
        the database, so rows never travel to Python and locks stay short
        however many rows go. ``progress(n)`` hears each batch. Idempotent.
        The database's counterpart of ``clear_expired()`` in Django's
        session backends.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        statement = self.sql.purge_batch(cutoff_ns, batch_size)
        deleted = 0
        while True:
            batch = self.runner.in_transaction([statement])
            deleted += batch
            if progress is not None:
                progress(batch)
            if batch < batch_size:
                return deleted
