"""The peer a user would otherwise pick: a small Starlette service over a psycopg pool.

It serves the host project's table (``sessions_app_executionsession``) with
the API's JSON record and a token check, for ``GET``, ``PUT`` (an upsert)
and ``DELETE /api/sessions/{id}/``, and nothing else: no Django, no
permissions beyond a valid token, no agent keys, no throttling, no logging.
``benchmarks/edge_bench.py`` loads it beside the host project.

- Tokens: ``Authorization: Token <key>`` is looked up in ``authtoken_token``
  (the user active, as DRF's ``TokenAuthentication`` asks) and the answer is
  kept in this process's memory for ``TOKEN_TTL`` seconds, as a lean service
  would; a missing or unknown token is 401 with ``WWW-Authenticate: Token``.
- ``started_at_ns`` is stored as ``value - 2**63`` in a signed 64-bit column
  (``sessions_app.storage.types.encode_unsigned``); the record is written
  as the API writes it (``sessions_app.api.serializers.record_json``, whose
  few lines are repeated here so that this process never imports Django).
- ``PUT`` is one ``INSERT ... ON CONFLICT (session_id) DO UPDATE``, 201 when
  the row is new and 200 when it replaced one (``RETURNING xmax = 0``);
  ``DELETE`` is 204 whether or not the row existed, as the API answers.

Run: ``PEER_DATABASE_URL=postgres://postgres@127.0.0.1:5432/sessions_bench
uvicorn benchmarks.peer_app:app`` (``BENCH_DATABASE_URL`` is read when
``PEER_DATABASE_URL`` is unset). ``PEER_POOL_SIZE``: connections per worker
process (10, the project's ``SESSIONS_APP["POOL_SIZE"]`` default).
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

DATABASE_URL = os.environ.get("PEER_DATABASE_URL") or os.environ.get(
    "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sessions_bench"
)
POOL_SIZE = int(os.environ.get("PEER_POOL_SIZE", "10"))
TOKEN_TTL = 30.0  # seconds, as the project's AUTH_CACHE_TIMEOUT

AGENT_ID_MAX = 2**63 - 1
STARTED_AT_NS_MAX = 2**64 - 1
SIGNED_OFFSET = 2**63

pool = AsyncConnectionPool(
    DATABASE_URL, min_size=POOL_SIZE, max_size=POOL_SIZE, open=False, kwargs={"autocommit": True}
)
tokens: dict[str, tuple[int, float]] = {}  # key -> (user id, when the answer expires: time.monotonic())


def ns_to_iso8601(started_at_ns: int) -> str:
    """UTC ISO 8601 with microseconds (truncated) and a ``Z``, as the API writes ``started_at``."""
    seconds, nanoseconds = divmod(started_at_ns, 1_000_000_000)
    t = time.gmtime(seconds)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%06dZ" % (  # noqa: UP031 - as the API formats it
        t.tm_year,
        t.tm_mon,
        t.tm_mday,
        t.tm_hour,
        t.tm_min,
        t.tm_sec,
        nanoseconds // 1000,
    )


def record(session_id: uuid.UUID, agent_id: int, started_at_ns: int, status: int = 200) -> Response:
    body = {
        "session_id": str(session_id),
        "agent_id": str(agent_id),
        "started_at_ns": str(started_at_ns),
        "started_at": ns_to_iso8601(started_at_ns),
    }
    return Response(orjson.dumps(body), status, media_type="application/json")


def error(status: int, detail: object, headers: dict[str, str] | None = None) -> Response:
    body = detail if isinstance(detail, dict) else {"detail": detail}
    return Response(orjson.dumps(body), status, headers=headers, media_type="application/json")


UNAUTHENTICATED = {"WWW-Authenticate": "Token"}


async def user_of(request: Request) -> int | None:
    """The id of the token's active user, or None."""
    words = request.headers.get("authorization", "").split()
    if len(words) != 2 or words[0].lower() != "token":
        return None
    key = words[1]
    now = time.monotonic()
    known = tokens.get(key)
    if known is not None and known[1] > now:
        return known[0]
    async with pool.connection() as conn:
        cursor = await conn.execute(
            "SELECT t.user_id FROM authtoken_token t JOIN auth_user u ON u.id = t.user_id"
            " WHERE t.key = %s AND u.is_active",
            (key,),
        )
        row = await cursor.fetchone()
    if row is None:
        tokens.pop(key, None)
        return None
    tokens[key] = (row[0], now + TOKEN_TTL)
    return int(row[0])


def unsigned(value: Any, maximum: int) -> int | None:
    """An integer, or its decimal text, in ``0..maximum``; None for anything else."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if type(value) is not int or not 0 <= value <= maximum:
        return None
    return value


async def session(request: Request) -> Response:
    if await user_of(request) is None:
        return error(401, "Authentication credentials were not provided or are invalid.", UNAUTHENTICATED)
    try:
        session_id = uuid.UUID(request.path_params["session_id"])
    except ValueError:
        return error(404, "No session with this id.")
    method = request.method
    if method in ("GET", "HEAD"):
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "SELECT agent_id, started_at_ns FROM sessions_app_executionsession WHERE session_id = %s",
                (session_id.bytes,),
            )
            row = await cursor.fetchone()
        if row is None:
            return error(404, "No session with this id.")
        return record(session_id, row[0], row[1] + SIGNED_OFFSET)
    if method == "PUT":
        try:
            data = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, "JSON parse error.")
        if not isinstance(data, dict):
            return error(400, "Expected a JSON object.")
        agent_id = unsigned(data.get("agent_id"), AGENT_ID_MAX)
        started_at_ns = unsigned(data.get("started_at_ns"), STARTED_AT_NS_MAX)
        problems: dict[str, list[str]] = {}
        if agent_id is None:
            problems["agent_id"] = [f"An integer in 0..{AGENT_ID_MAX} is required."]
        if started_at_ns is None:
            problems["started_at_ns"] = [f"An integer in 0..{STARTED_AT_NS_MAX} is required."]
        if "session_id" in data and data["session_id"] != str(session_id):
            problems["session_id"] = ["Must equal the session id in the URL, if given."]
        if problems or agent_id is None or started_at_ns is None:
            return error(400, problems)
        async with pool.connection() as conn:
            cursor = await conn.execute(
                "INSERT INTO sessions_app_executionsession (session_id, agent_id, started_at_ns)"
                " VALUES (%s, %s, %s) ON CONFLICT (session_id) DO UPDATE"
                " SET agent_id = EXCLUDED.agent_id, started_at_ns = EXCLUDED.started_at_ns"
                " RETURNING (xmax = 0)",
                (session_id.bytes, agent_id, started_at_ns - SIGNED_OFFSET),
            )
            row = await cursor.fetchone()
        created = bool(row and row[0])
        return record(session_id, agent_id, started_at_ns, 201 if created else 200)
    # DELETE (the route admits no other method)
    async with pool.connection() as conn:
        await conn.execute(
            "DELETE FROM sessions_app_executionsession WHERE session_id = %s", (session_id.bytes,)
        )
    return Response(status_code=204)


@contextlib.asynccontextmanager
async def lifespan(_app: Starlette) -> AsyncIterator[None]:
    await pool.open(wait=True)
    try:
        yield
    finally:
        await pool.close()


app = Starlette(
    routes=[Route("/api/sessions/{session_id}/", session, methods=["GET", "PUT", "DELETE"])],
    lifespan=lifespan,
)
