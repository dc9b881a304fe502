"""``SyncDjangoSessionStore``: the store's contract for synchronous callers."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable

from django.apps import apps
from django.db import models

from ..errors import NotFound, OutOfScope
from ..metrics import timed
from ..types import SessionId, SessionRecord, check_agent_ids, check_record
from .portable import CursorRunner
from .sql import Agents, SessionSQL, decode_row, dedupe_last_wins, records_by_id, session_sql, unique_ids

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
    ``for_agents()`` gives the same store scoped to some agents.
    """

    #: The agents this store may see (``for_agents``); ``None``: every agent.
    agents: Agents | None = None

    def __init__(self, using: str | None = None, *, model: type[models.Model] | None = None) -> None:
        self.using = using or default_alias()
        self.model = model or default_model()
        self.runner = CursorRunner(self.using)

    def __repr__(self) -> str:
        scope = "" if self.agents is None else f", agents={list(self.agents)}"
        return f"{type(self).__name__}(using={self.using!r}, model={self.model.__name__}{scope})"

    @property
    def sql(self) -> SessionSQL:
        return session_sql(self.model, self.using)

    def for_agents(self, agent_ids: Iterable[int]) -> SyncDjangoSessionStore:
        """This store, seeing only the sessions of ``agent_ids``: row-level security's rule.

        Another agent's session is absent to ``load`` and ``load_many``, left
        alone by ``delete`` and ``delete_many`` (not counted), and a write
        that would store a record of another agent, or overwrite a session
        stored under one, raises ``OutOfScope`` with nothing written. Each
        check is part of the statement (or transaction) that writes, so
        racing writers cannot get round it. ``purge_before`` is not scoped:
        a scoped store refuses it.
        """
        scoped = copy.copy(self)
        scoped.agents = check_agent_ids(agent_ids)
        return scoped

    # -- the contract ------------------------------------------------------

    @timed("save")
    def save(self, record: SessionRecord) -> None:
        if self.agents is None:
            self.runner.execute(self.sql.save(check_record(record)))
        else:
            self.upsert(record)

    @timed("load")
    def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        row = self.runner.fetchone(self.sql.load(session_id, self.agents))
        if row is None:
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, row[0], row[1])

    @timed("delete")
    def delete(self, session_id: SessionId) -> None:
        self.runner.execute(self.sql.delete(SessionId(session_id), self.agents))

    # -- beyond the contract -------------------------------------------------

    @timed("save")
    def insert(self, record: SessionRecord) -> None:
        """Create ``record``; ``ConflictError`` if its id exists (under any agent). One ``INSERT``."""
        statement = self.sql.insert(check_in_scope(check_record(record), self.agents))
        self.runner.run(lambda cursor: cursor.execute(*statement), atomic=True)

    @timed("save")
    def upsert(self, record: SessionRecord) -> bool:
        """``save`` that also tells whether the record was created (``True``) or replaced.

        On PostgreSQL one statement answers both (``RETURNING xmax = 0``).
        Elsewhere one transaction inserts if absent, then updates
        (``SessionSQL.insert_then_update``), so no other writer can slip
        between the two.
        """
        record = check_in_scope(check_record(record), self.agents)
        reporting = self.sql.upsert_reporting_insert(record, self.agents)
        if reporting is not None:
            row = self.runner.fetchone(reporting)
            return created_or_refused(row[0] if row else None, record)
        touched = self.runner.in_transaction(self.sql.insert_then_update(record, self.agents))
        return created_or_refused({2: True, 1: False}.get(touched), record)

    @timed("save_many")
    def save_many(self, records: Iterable[SessionRecord]) -> int:
        """Save every record, all in one transaction; with repeated ids the last one wins.

        Returns how many distinct ids were saved.
        """
        unique = dedupe_last_wins(check_in_scope(check_record(record), self.agents) for record in records)
        if unique:
            self.runner.in_transaction(*self.sql.scoped_save_batches(unique, self.agents))
        return len(unique)

    @timed("load_many")
    def load_many(self, session_ids: Iterable[bytes]) -> dict[SessionId, SessionRecord]:
        """The records that exist among ``session_ids``; absent ids are simply missing."""
        wanted = unique_ids(session_ids)
        return (
            records_by_id(self.runner.fetchall(self.sql.load_batches(wanted, self.agents))) if wanted else {}
        )

    @timed("delete_many")
    def delete_many(self, session_ids: Iterable[bytes]) -> int:
        """Delete every listed id, in one transaction; returns how many existed."""
        doomed = unique_ids(session_ids)
        return self.runner.in_transaction(self.sql.delete_batches(doomed, self.agents)) if doomed else 0

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
        refuse_scoped_purge(self.agents)
        statement = self.sql.purge_batch(cutoff_ns, batch_size)
        deleted = 0
        while True:
            batch = self.runner.in_transaction([statement])
            deleted += batch
            if progress is not None:
                progress(batch)
            if batch < batch_size:
                return deleted


def check_in_scope(record: SessionRecord, agents: Agents | None) -> SessionRecord:
    """``record``, or ``OutOfScope`` when a scoped store is asked to write it for another agent."""
    if agents is not None and record.agent_id not in agents:
        raise OutOfScope(f"agent {record.agent_id} is outside this store's agents", ())
    return record


def created_or_refused(created: object, record: SessionRecord) -> bool:
    """An upsert's answer (``True`` created, ``False`` replaced); ``None``: the id is another agent's."""
    if created is None:
        raise OutOfScope(
            f"session {record.session_id} is stored under an agent outside the scope",
            (bytes(record.session_id),),
        )
    return bool(created)


def refuse_scoped_purge(agents: Agents | None) -> None:
    if agents is not None:
        raise OutOfScope(
            "purge_before deletes every agent's sessions: an operator's call, not a scoped store's"
        )
