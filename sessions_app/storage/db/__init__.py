"""Stores over the ``ExecutionSession`` table, through Django's database settings.

- ``store.py``: ``DjangoSessionStore``, the async contract;
- ``sync.py``: ``SyncDjangoSessionStore``, the same for synchronous callers;
- ``sql.py``: every statement, once per table and vendor, and the batches;
- ``paths.py``: ``AsyncPath``, the interface to a database, and the choice
  of path per alias; ``postgresql.py``, ``sqlite.py`` and ``portable.py``
  implement it;
- ``errors.py``: every driver's errors onto the contract's.

Data flow: a store call validates its input, asks ``SessionSQL`` for its
statements, and hands them to its path, which runs them on a connection it
owns and answers rows or the contract's error.
"""

from .errors import is_transient
from .portable import backend_errors
from .store import DjangoSessionStore
from .sync import SyncDjangoSessionStore

__all__ = ["DjangoSessionStore", "SyncDjangoSessionStore", "backend_errors", "is_transient"]
