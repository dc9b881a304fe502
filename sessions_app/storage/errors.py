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


class OutOfScope(ConflictError):
    """A write of a store scoped to some agents met a session of another agent.

    The row-level rule (``DjangoSessionStore.for_agents``): another agent's
    session is invisible to reads and deletes, and a write that would
    overwrite it is refused with this error, nothing written.
    ``session_ids`` are the ids found under other agents.
    """

    def __init__(self, message: str, session_ids: tuple[bytes, ...] = ()) -> None:
        super().__init__(message)
        self.session_ids = session_ids
