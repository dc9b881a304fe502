"""The native async path to PostgreSQL: psycopg's async connection pool.

Why not Django's async ORM: every query it runs hops to a worker thread
(``sync_to_async``), and that hop costs more than half of what the query
itself costs on a local server. psycopg 3 speaks asyncio natively, so the
event loop waits on the socket directly and 64 concurrent tasks have 64
queries in flight on up to ``POOL_SIZE`` connections, not one worker thread.

Configuration still comes from Django: the pool connects with the alias'
``get_connection_params()`` (``NAME``, ``USER``, ``HOST``, ``OPTIONS`` ...),
in autocommit mode. One pool per alias and event loop, since asyncio
objects belong to the loop that made them.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg
from django.db import connections
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from .errors import BackendError, ConflictError
from .sql import ARRAY_ROWS, SessionSQL, chunks, column_params
from .types import SessionRecord

# Django-specific keys of get_connection_params() that psycopg.connect does not take.
_DJANGO_ONLY_PARAMS = ("cursor_factory", "context", "pool", "server_side_binding")

_pools: dict[str, weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncConnectionPool]] = {}


def connection_kwargs(alias: str) -> dict[str, Any]:
    """psycopg.connect() keyword arguments for the Django alias, in autocommit."""
    wrapper = connections[alias]
    params = wrapper.get_connection_params()
    for key in _DJANGO_ONLY_PARAMS:
        params.pop(key, None)
    if "prepare_threshold" not in wrapper.settings_dict["OPTIONS"]:
        # Django turns server-side prepared statements off unless OPTIONS
        # asks for them (for transaction-mode poolers). This path runs the
        # same three statements all the time, so it keeps psycopg's default
        # (prepare after 5 uses); OPTIONS["prepare_threshold"] = None turns
        # it off here too.
        params.pop("prepare_threshold", None)
    params["autocommit"] = True
    return params


async def get_pool(alias: str, size: int, timeout: float) -> AsyncConnectionPool:  # noqa: ASYNC109 - the pool's wait, not this call's
    """The open pool for ``alias`` in the running event loop, made on first use."""
    loop = asyncio.get_running_loop()
    per_loop = _pools.setdefault(alias, weakref.WeakKeyDictionary())
    pool = per_loop.get(loop)
    if pool is None:
        pool = AsyncConnectionPool(
            kwargs=connection_kwargs(alias),
            min_size=1,
            max_size=size,
            timeout=timeout,
            open=False,
            name=f"sessions_app:{alias}",
        )
        per_loop[loop] = pool  # before awaiting, so concurrent first calls share it
        await pool.open()
    return pool


async def close_pools(alias: str | None = None) -> None:
    """Close the running event loop's pools, of one alias or all (at shutdown, or between tests)."""
    loop = asyncio.get_running_loop()
    for pool_alias, per_loop in _pools.items():
        if alias is None or alias == pool_alias:
            pool = per_loop.pop(loop, None)
            if pool is not None:
                await pool.close()


class PostgresAsyncPath:
    """Runs the store's statements over the alias' pool; errors become the contract's."""

    def __init__(self, alias: str, size: int, timeout: float) -> None:
        self.alias = alias
        self.size = size
        self.timeout = timeout

    async def execute(self, sql: str, params: Sequence[Any]) -> None:
        pool = await get_pool(self.alias, self.size, self.timeout)
        async with _translated_errors(self.alias), pool.connection() as conn:
            await conn.execute(sql, params)

    async def fetchone(self, sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
        pool = await get_pool(self.alias, self.size, self.timeout)
        async with _translated_errors(self.alias), pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        pool = await get_pool(self.alias, self.size, self.timeout)
        async with _translated_errors(self.alias), pool.connection() as conn:
            cursor = await conn.execute(sql, params)
            return await cursor.fetchall()

    async def in_transaction(self, statements: Sequence[tuple[str, Sequence[Any]]]) -> None:
        """Run several statements in one transaction (the batch calls)."""
        pool = await get_pool(self.alias, self.size, self.timeout)
        async with _translated_errors(self.alias), pool.connection() as conn, conn.transaction():
            for sql, params in statements:
                await conn.execute(sql, params)

    async def save_many(self, sql: SessionSQL, records: Sequence[SessionRecord]) -> None:
        await self.in_transaction([(sql.upsert_array, column_params(c)) for c in chunks(records, ARRAY_ROWS)])  # type: ignore[misc]

    async def load_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for chunk in chunks(ids, ARRAY_ROWS):
            rows += await self.fetchall(sql.select_any, (list(chunk),))  # type: ignore[arg-type]
        return rows

    async def delete_many(self, sql: SessionSQL, ids: Sequence[bytes]) -> None:
        await self.in_transaction([(sql.delete_any, (list(c),)) for c in chunks(ids, ARRAY_ROWS)])  # type: ignore[misc]

    async def aclose(self) -> None:
        await close_pools(self.alias)


@asynccontextmanager
async def _translated_errors(alias: str) -> AsyncIterator[None]:
    try:
        yield
    except psycopg.IntegrityError as exc:
        raise ConflictError(f"PostgreSQL: {exc}") from exc
    except PoolTimeout as exc:
        # Either the pool is busy or the server cannot be reached. One
        # direct connection attempt tells which, and names the real cause.
        try:
            probe = await psycopg.AsyncConnection.connect(**connection_kwargs(alias), connect_timeout=3)
        except psycopg.Error as unreachable:
            raise BackendError(f"PostgreSQL is unreachable: {unreachable}") from unreachable
        await probe.close()
        raise BackendError(f"PostgreSQL: no pooled connection free in time: {exc}") from exc
    except (psycopg.Error, OSError) as exc:
        raise BackendError(f"PostgreSQL: {type(exc).__name__}: {exc}") from exc
