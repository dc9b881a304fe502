"""The storage contract of the agent-governance runtime, and its stores.

Mirrors the runtime's ``aa_core::storage`` module::

    from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord

    store = DjangoSessionStore()
    record = SessionRecord(SessionId.new(), agent_id=42, started_at_ns=time.time_ns())
    await store.save(record)
    assert await store.load(record.session_id) == record
    await store.delete(record.session_id)
"""

from .base import SessionStore
from .cached import CachedSessionStore
from .conformance import assert_session_store_conformance
from .db import DjangoSessionStore, SyncDjangoSessionStore
from .errors import BackendError, ConflictError, NotFound, SerializationError, StorageError
from .memory import InMemorySessionStore
from .types import SessionId, SessionRecord

__all__ = [
    "BackendError",
    "CachedSessionStore",
    "ConflictError",
    "DjangoSessionStore",
    "InMemorySessionStore",
    "NotFound",
    "SerializationError",
    "SessionId",
    "SessionRecord",
    "SessionStore",
    "StorageError",
    "SyncDjangoSessionStore",
    "assert_session_store_conformance",
]
