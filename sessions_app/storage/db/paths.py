"""``AsyncPath``: the one interface between ``DjangoSessionStore`` and the ways it reaches a database.

A path runs the store's statements (``db/sql.py``) and nothing else: it
knows its driver, its connections and their lifecycle (event loops, forks,
shutdown), not the session table. Three implement it:

- ``PostgresPath`` (``db/postgresql.py``): psycopg 3's async connections, a
  small pool per event loop;
- ``SQLitePath`` (``db/sqlite.py``): one sqlite3 connection on a dedicated
  thread;
- ``ThreadedPath`` (``db/portable.py``): Django's own connection through
  ``sync_to_async``, for every other database or when asked.

``path_for`` chooses once per alias; every store on the alias shares it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Protocol

from django.db import connections

from .sql import Row, Statement

logger = logging.getLogger("sessions_app.storage")


class AsyncPath(Protocol):
    """Runs statements on one database alias; every error is already the contract's.

    ``execute`` and ``fetchone`` run one statement in autocommit mode;
    ``fetchall`` runs selects and joins their rows; ``in_transaction`` runs
    statements in one transaction, all or nothing, and returns the rows
    they touched; then, in the same transaction, the selects
    ``refuse_if_found``: if any finds a row, it rolls back and raises
    ``OutOfScope`` naming the ids found (``sql.check_refusals``). All of
    them are safe to retry: the store's statements are idempotent.
    """

    name: str

    async def execute(self, statement: Statement) -> int: ...

    async def fetchone(self, statement: Statement) -> Row | None: ...

    async def fetchall(self, statements: Sequence[Statement]) -> list[Row]: ...

    async def in_transaction(
        self, statements: Sequence[Statement], refuse_if_found: Sequence[Statement] = ()
    ) -> int: ...

    async def aclose(self) -> None:
        """Release what the path holds for the calling event loop; it reopens on the next call."""


_paths: dict[tuple[str, str, bool], AsyncPath] = {}
_paths_lock = threading.Lock()


def path_for(alias: str, *, native: bool) -> AsyncPath:
    """The path for ``alias``: native where the database has one and ``native`` allows, else portable."""
    vendor = connections[alias].vendor
    key = (alias, vendor, native)
    path = _paths.get(key)
    if path is None:
        with _paths_lock:
            path = _paths.get(key)
            if path is None:
                path = _paths[key] = _new_path(alias, vendor, native)
    return path


def _new_path(alias: str, vendor: str, native: bool) -> AsyncPath:
    from .portable import ThreadedPath

    if native and vendor == "postgresql":
        try:
            from .postgresql import PostgresPath
        except ImportError:  # psycopg2 only: no asyncio support
            logger.info("psycopg 3 is not installed; the database %r uses sync_to_async", alias)
        else:
            return PostgresPath(alias)
    if native and vendor == "sqlite":
        from .sqlite import SQLitePath

        return SQLitePath(alias)
    return ThreadedPath(alias)
