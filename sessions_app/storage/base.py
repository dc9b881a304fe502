"""``SessionStore``: the storage contract every backend implements."""

from __future__ import annotations

import abc
from collections.abc import Iterable
from types import TracebackType
from typing import Self

from .types import SessionId, SessionRecord


class SessionStore(abc.ABC):
    """Persists, loads and deletes ``SessionRecord`` objects.

    The runtime saves a record when a session starts, loads it to resume
    governance context, and deletes it when the session ends. Every method is
    a coroutine and must not block the event loop.

    Errors are the closed set in ``sessions_app.storage.errors``: ``NotFound``
    from ``load`` when the id is absent, ``BackendError`` when the backend
    fails, ``SerializationError`` when stored data does not decode,
    ``ConflictError`` for a uniqueness violation.

    Example, a store that holds no sessions::

        class EmptySessionStore(SessionStore):
            async def save(self, record):
                pass

            async def load(self, session_id):
                raise NotFound(str(session_id))

            async def delete(self, session_id):
                pass

    Every implementation should pass ``assert_session_store_conformance``.

    The batch methods (``save_many``, ``load_many``, ``delete_many``) are not
    part of the runtime's trait; the defaults here call the single methods
    one by one, and stores that can do better override them.
    """

    @abc.abstractmethod
    async def save(self, record: SessionRecord) -> None:
        """Persist ``record``, overwriting any record with the same session id."""

    @abc.abstractmethod
    async def load(self, session_id: SessionId) -> SessionRecord:
        """Return the record for ``session_id``; raise ``NotFound`` if there is none."""

    @abc.abstractmethod
    async def delete(self, session_id: SessionId) -> None:
        """Delete the record for ``session_id``.

        Idempotent: deleting an absent session succeeds.
        """

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        """Save every record; with repeated ids, the last one wins."""
        for record in records:
            await self.save(record)

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        """Return the records that exist among ``session_ids``; absent ids are simply missing."""
        found: dict[SessionId, SessionRecord] = {}
        for session_id in session_ids:
            try:
                found[session_id] = await self.load(session_id)
            except LookupError:
                continue
        return found

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        """Delete every listed session; absent ids are fine."""
        for session_id in session_ids:
            await self.delete(session_id)

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release what the store holds for the calling event loop (connections, clients).

        Safe to call twice; the store stays usable and reopens what it needs
        on the next call.
        """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
