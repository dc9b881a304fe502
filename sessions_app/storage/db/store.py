"""``DjangoSessionStore``: the async contract over the model's table."""

from __future__ import annotations

import copy
from collections.abc import Iterable

from django.db import models

from ..base import SessionStore
from ..errors import NotFound
from ..metrics import timed_async
from ..types import SessionId, SessionRecord, check_agent_ids, check_record
from .paths import AsyncPath, path_for
from .sql import Agents, SessionSQL, decode_row, dedupe_last_wins, records_by_id, unique_ids
from .sync import (
    PURGE_BATCH_SIZE,
    SyncDjangoSessionStore,
    check_in_scope,
    created_or_refused,
    refuse_scoped_purge,
)


class DjangoSessionStore(SessionStore):
    """The async ``SessionStore`` over the model's table on the Django database ``using``.

    Each call is one SQL statement (batches: one per chunk, in one
    transaction), the same SQL as ``SyncDjangoSessionStore``, on the
    fastest path the database offers (``db/paths.py``), chosen on the first
    call and kept:

    - PostgreSQL with psycopg 3: natively async, a small pool per event loop;
    - SQLite: a dedicated thread that owns one connection;
    - otherwise (or ``native_async=False``): Django's own connection through
      ``sync_to_async``.

    Every path is configured by ``DATABASES[using]`` alone and passes the
    conformance routine. The native paths use their own connections, so a
    call does not join a transaction the caller opened with ``atomic()``.
    ``using`` defaults to ``SESSIONS_APP["DATABASE_ALIAS"]``. ``self.sync``
    is the same store for synchronous callers; ``aclose()`` (or ``async
    with``) releases the calling event loop's connections. ``for_agents()``
    gives the same store scoped to some agents (row-level security's rule,
    as ``SyncDjangoSessionStore.for_agents``).
    """

    #: The agents this store may see (``for_agents``); ``None``: every agent.
    agents: Agents | None = None

    def __init__(
        self,
        using: str | None = None,
        *,
        model: type[models.Model] | None = None,
        native_async: bool | None = None,
    ) -> None:
        self.sync = SyncDjangoSessionStore(using, model=model)
        self.using = self.sync.using
        self.model = self.sync.model
        self._native_async = native_async
        self._bound: tuple[AsyncPath, SessionSQL] | None = None

    def __repr__(self) -> str:
        scope = "" if self.agents is None else f", agents={list(self.agents)}"
        return f"{type(self).__name__}(using={self.using!r}, model={self.model.__name__}{scope})"

    def for_agents(self, agent_ids: Iterable[int]) -> DjangoSessionStore:
        """This store, seeing only the sessions of ``agent_ids``; it shares this store's path."""
        scoped = copy.copy(self)
        scoped.agents = check_agent_ids(agent_ids)
        scoped.sync = self.sync.for_agents(scoped.agents)
        return scoped

    @property
    def path(self) -> AsyncPath:
        """The path this store's calls take; ``path.name`` says which."""
        return (self._bound or self._bind())[0]

    @property
    def path_name(self) -> str:
        return self.path.name

    def _bind(self) -> tuple[AsyncPath, SessionSQL]:
        from ...conf import app_settings

        native = app_settings.NATIVE_ASYNC if self._native_async is None else self._native_async
        self._bound = (path_for(self.using, native=bool(native)), self.sync.sql)
        return self._bound

    # -- the contract ------------------------------------------------------

    @timed_async("save")
    async def save(self, record: SessionRecord) -> None:
        if self.agents is not None:
            await self.upsert(record)
            return
        record = check_record(record)
        path, sql = self._bound or self._bind()
        await path.execute(sql.save(record))

    @timed_async("load")
    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        path, sql = self._bound or self._bind()
        # Scoped or not, one statement by primary key, the scope checked
        # here: the same answer, without an array parameter to send.
        row = await path.fetchone(sql.load(session_id))
        if row is None or (self.agents is not None and row[0] not in self.agents):
            raise NotFound(f"no session {session_id}")
        return decode_row(session_id, row[0], row[1])

    @timed_async("delete")
    async def delete(self, session_id: SessionId) -> None:
        session_id = SessionId(session_id)
        path, sql = self._bound or self._bind()
        await path.execute(sql.delete(session_id, self.agents))

    # -- beyond the contract -------------------------------------------------

    @timed_async("save")
    async def upsert(self, record: SessionRecord) -> bool:
        """``save`` that also tells whether the record was created (``True``) or replaced.

        As ``SyncDjangoSessionStore.upsert``: on PostgreSQL one statement
        answers both; elsewhere one transaction inserts if absent, then
        updates (``SessionSQL.insert_then_update``).
        """
        record = check_in_scope(check_record(record), self.agents)
        path, sql = self._bound or self._bind()
        reporting = sql.upsert_reporting_insert(record, self.agents)
        if reporting is not None:
            row = await path.fetchone(reporting)
            return created_or_refused(row[0] if row else None, record)
        touched = await path.in_transaction(sql.insert_then_update(record, self.agents))
        return created_or_refused({2: True, 1: False}.get(touched), record)

    # -- batches -----------------------------------------------------------

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        await self.save_many_counted(records)

    @timed_async("save_many")
    async def save_many_counted(self, records: Iterable[SessionRecord]) -> int:
        """``save_many`` that returns how many distinct ids it saved (as the sync store's ``save_many``)."""
        unique = dedupe_last_wins(check_in_scope(check_record(record), self.agents) for record in records)
        if unique:
            path, sql = self._bound or self._bind()
            await path.in_transaction(*sql.scoped_save_batches(unique, self.agents))
        return len(unique)

    @timed_async("load_many")
    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = unique_ids(session_ids)
        if not wanted:
            return {}
        path, sql = self._bound or self._bind()
        return records_by_id(await path.fetchall(sql.load_batches(wanted, self.agents)))

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        await self.delete_many_counted(session_ids)

    @timed_async("delete_many")
    async def delete_many_counted(self, session_ids: Iterable[SessionId]) -> int:
        """``delete_many`` that returns how many of the ids existed (as the sync store's ``delete_many``)."""
        doomed = unique_ids(session_ids)
        if not doomed:
            return 0
        path, sql = self._bound or self._bind()
        return await path.in_transaction(sql.delete_batches(doomed, self.agents))

    @timed_async("purge")
    async def purge_before(self, cutoff_ns: int, *, batch_size: int = PURGE_BATCH_SIZE) -> int:
        """Delete the sessions that started before ``cutoff_ns``; as ``SyncDjangoSessionStore``'s."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        refuse_scoped_purge(self.agents)
        path, sql = self._bound or self._bind()
        statement = sql.purge_batch(cutoff_ns, batch_size)
        deleted = 0
        while True:
            batch = await path.in_transaction([statement])
            deleted += batch
            if batch < batch_size:
                return deleted

    async def aclose(self) -> None:
        """Close the connections this store's path holds for the calling event loop (it reopens lazily)."""
        if self._bound is not None:
            await self._bound[0].aclose()
