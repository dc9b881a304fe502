"""The closed set of storage errors, one class per variant of the runtime's
``StorageError`` enum.

Callers catch ``StorageError`` for "the store failed", or one subclass for a
specific outcome. A store never lets a driver exception escape: it chains
the driver's error as ``__cause__`` of one of these.
"""


class StorageError(Exception):
    """Base class of every error a ``SessionStore`` raises."""


class NotFound(StorageError, LookupError):
    """No record exists for the requested session id."""


class BackendError(StorageError):
    """The backend is unreachable or failed (connection, missing table, I/O)."""


class SerializationError(StorageError):
    """Stored data does not decode to a ``SessionRecord``."""


class ConflictError(StorageError):
    """A uniqueness or optimistic-concurrency rule was violated."""
