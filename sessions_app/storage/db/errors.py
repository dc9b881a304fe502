"""Database errors onto the contract's errors: every driver the store meets, in one place.

The store reaches its database through Django's cursor (any backend) and
through two drivers directly (sqlite3, psycopg 3). Each raises its own
classes; callers of the store see only ``ConflictError`` for an integrity
violation and ``BackendError`` for everything else, with the driver's error
chained as ``__cause__``.
"""

from __future__ import annotations

import sqlite3

from django.db import Error as DjangoDatabaseError
from django.db import IntegrityError as DjangoIntegrityError

from ..errors import BackendError, ConflictError, StorageError

_psycopg_errors: tuple[type[BaseException], ...] = ()
_psycopg_integrity: tuple[type[BaseException], ...] = ()
try:
    from psycopg import Error as _PsycopgError
    from psycopg import IntegrityError as _PsycopgIntegrityError
except ImportError:  # psycopg 3 is optional: without it PostgreSQL takes the portable path
    pass
else:
    _psycopg_errors, _psycopg_integrity = (_PsycopgError,), (_PsycopgIntegrityError,)

# How often an operation runs when the database aborts it as a deadlock
# victim or a serialization failure (seen on MySQL/MariaDB under contention,
# and possible on PostgreSQL when two batches lock shared rows in another order).
TRANSIENT_RETRIES = 3
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock detected
_TRANSIENT_MYSQL_CODES = frozenset({1205, 1213})  # lock wait timeout, deadlock

DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    DjangoDatabaseError,
    sqlite3.Error,
    OSError,
    *_psycopg_errors,
)
"""What a store catches around a database call: everything else is a bug and propagates."""

_INTEGRITY_ERRORS: tuple[type[BaseException], ...] = (
    DjangoIntegrityError,
    sqlite3.IntegrityError,
    *_psycopg_integrity,
)


def is_transient(exc: BaseException) -> bool:
    """Whether the database aborted the statement for a concurrency reason, so that a retry may succeed.

    Django wraps the driver's error and chains it as ``__cause__``; psycopg
    names the SQLSTATE, PyMySQL puts MySQL's error code first in ``args``.
    """
    cause = exc.__cause__ or exc
    if getattr(cause, "sqlstate", None) in _TRANSIENT_SQLSTATES:
        return True
    args: tuple[object, ...] = tuple(getattr(cause, "args", ()))
    return bool(args) and args[0] in _TRANSIENT_MYSQL_CODES


def translated(exc: BaseException, where: str) -> StorageError:
    """The contract's error for a driver error raised ``where``, with the driver's error chained."""
    error: StorageError
    if isinstance(exc, _INTEGRITY_ERRORS):
        error = ConflictError(f"{where}: {exc}")
    else:
        error = BackendError(f"{where}: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
