"""``InMemorySessionStore``: a real store kept in a dict, for tests and embedding."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from .base import SessionStore
from .errors import NotFound
from .types import SessionId, SessionRecord, check_record


class InMemorySessionStore(SessionStore):
    """Keeps records in process memory; nothing survives the process.

    Each operation is a single dict update under a lock and never awaits
    while holding it, so concurrent asyncio tasks, and threads each running
    their own event loop, see every operation as atomic.
    """

    def __init__(self) -> None:
        self._records: dict[SessionId, SessionRecord] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    async def save(self, record: SessionRecord) -> None:
        record = check_record(record)
        with self._lock:
            self._records[record.session_id] = record

    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        try:
            return self._records[session_id]
        except KeyError:
            raise NotFound(f"no session {session_id}") from None

    async def delete(self, session_id: SessionId) -> None:
        session_id = SessionId(session_id)
        with self._lock:
            self._records.pop(session_id, None)

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        checked = [check_record(record) for record in records]
        with self._lock:
            self._records.update((record.session_id, record) for record in checked)

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = [SessionId(session_id) for session_id in session_ids]
        return {sid: self._records[sid] for sid in wanted if sid in self._records}

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        doomed = [SessionId(session_id) for session_id in session_ids]
        with self._lock:
            for session_id in doomed:
                self._records.pop(session_id, None)
