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
    "get_session_store",
]


def get_session_store() -> SessionStore:
    """The store ``SESSIONS_APP`` configures, as ``SESSION_ENGINE`` selects Django's session backend.

    ``SESSIONS_APP["STORE"]`` is a dotted path to a ``SessionStore`` class,
    built with ``SESSIONS_APP["STORE_OPTIONS"]`` as keyword arguments. For
    ``CachedSessionStore`` the options may name the backing store by path::

        SESSIONS_APP = {
            "STORE": "sessions_app.storage.CachedSessionStore",
            "STORE_OPTIONS": {"backing_store": "sessions_app.storage.DjangoSessionStore"},
        }

    A new instance each call; stores are cheap to make and share their
    connections per database.
    """
    from django.utils.module_loading import import_string

    from ..conf import app_settings

    store_class = import_string(app_settings.STORE)
    options = dict(app_settings.STORE_OPTIONS)
    backing = options.get("backing_store")
    if isinstance(backing, str):
        options["backing_store"] = import_string(backing)()
    if store_class is CachedSessionStore and "backing_store" not in options:
        options["backing_store"] = DjangoSessionStore()
    store = store_class(**options)
    if not isinstance(store, SessionStore):
        raise TypeError(f"SESSIONS_APP['STORE'] = {app_settings.STORE!r} is not a SessionStore")
    return store
