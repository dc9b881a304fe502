"""``HttpSessionStore``: the storage contract over the REST API, for code outside the Django process.

::

    from sessions_app.client import HttpSessionStore

    async with HttpSessionStore("http://host:8000/api/sessions/", token="...") as store:
        await store.save(record)
        found = await store.load_many(ids)

The same contract, errors and conformance routine as the in-process stores:
``NotFound`` for a load of an absent id, ``ConflictError`` for a 409,
``BackendError`` for 401, 403, 429 once retries are spent, any 5xx, a refused
connection or a timeout (the status in the message, the cause chained),
``SerializationError`` for an answer that is not the JSON the API writes.
Every call is idempotent, so connection errors, 502, 503, 504 and 429 are
retried, ``retries`` times at most, with exponential backoff (a 429's
``Retry-After`` is honoured up to ``MAX_BACKOFF``).

It needs only httpx and this package's value types: no Django settings,
so a worker that has the client alone can use it, or run
``assert_session_store_conformance`` against a live server.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any

import httpx
import orjson

from .storage.base import SessionStore
from .storage.errors import BackendError, ConflictError, NotFound, SerializationError, StorageError
from .storage.types import SessionId, SessionRecord, check_record

RETRIED_STATUSES = frozenset({429, 502, 503, 504})
BACKOFF = 0.1
"""Seconds before the first retry; each next one waits twice as long."""
MAX_BACKOFF = 5.0


class HttpSessionStore(SessionStore):
    """A ``SessionStore`` that speaks to ``sessions_app``'s REST API at ``url`` (the sessions collection).

    ``token`` is sent as ``Authorization: Token ...`` (a user's DRF token),
    ``api_key`` as ``Authorization: Api-Key ...`` (an agent key, scoped to
    its agents: ``manage.py create_agent_key``); give one or neither. ``timeout`` bounds each
    attempt, in seconds; ``client`` reuses an ``httpx.AsyncClient`` of yours
    (which this store then does not close; it must belong to the loop
    you call from). Otherwise the store opens a client per event loop and
    closes it when ``asyncio.run()`` ends that loop, or on ``aclose()``, so
    one store serves any number of loops in turn. Batch calls are split into
    requests of at most ``bulk_limit`` records, the server's
    ``SESSIONS_APP["MAX_BULK"]`` (10,000 unless the server changed it).
    """

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 2,
        client: httpx.AsyncClient | None = None,
        bulk_limit: int = 10_000,
    ) -> None:
        if token and api_key:
            raise ValueError("token and api_key are two ways to authenticate: give one of them, not both")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, got {retries}")
        if bulk_limit < 1:
            raise ValueError(f"bulk_limit must be at least 1, got {bulk_limit}")
        self.url = url if url.endswith("/") else url + "/"
        self.timeout = timeout
        self.retries = retries
        self.bulk_limit = bulk_limit
        self._headers = {"Accept": "application/json"}
        if token:
            self._headers["Authorization"] = f"Token {token}"
        elif api_key:
            self._headers["Authorization"] = f"Api-Key {api_key}"
        self._given_client = client
        # The store's own clients, one per event loop: an httpx.AsyncClient's
        # connections belong to the loop that opened them.
        self._clients: dict[asyncio.AbstractEventLoop, _LoopClient] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"

    @property
    def client(self) -> httpx.AsyncClient:
        """The running event loop's client: the one you passed in, else this store's own for the loop."""
        if self._given_client is not None:
            return self._given_client
        loop = asyncio.get_running_loop()
        own = self._clients.get(loop)
        if own is None or own.client.is_closed:
            for other in [other for other in list(self._clients) if other.is_closed()]:
                # its loop ended without asyncio.run()'s shutdown; pop: another thread may race us
                self._clients.pop(other, None)
            own = self._clients[loop] = _LoopClient(httpx.AsyncClient(timeout=self.timeout))
        return own.client

    async def _client(self) -> httpx.AsyncClient:
        client = self.client
        own = self._clients.get(asyncio.get_running_loop())
        if own is not None and own.hook is None:
            # Closed when asyncio.run() shuts the loop down (it finalises async generators).
            own.hook = _close_with_loop(own.client)
            await anext(own.hook)
        return client

    async def aclose(self) -> None:
        """Close the running event loop's HTTP connections (a client you passed in stays yours to close).

        The next call opens a new client. Without ``aclose()``, a loop's
        client is closed when ``asyncio.run()`` ends that loop.
        """
        own = self._clients.pop(asyncio.get_running_loop(), None)
        if own is not None:
            await own.client.aclose()

    # -- the contract ------------------------------------------------------

    async def save(self, record: SessionRecord) -> None:
        record = check_record(record)
        body = {"agent_id": str(record.agent_id), "started_at_ns": str(record.started_at_ns)}
        await self._call("PUT", f"{record.session_id}/", body, expect=(200, 201))

    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        answer = await self._call("GET", f"{session_id}/", expect=(200,), absent_is_not_found=True)
        return _record(answer, session_id)

    async def delete(self, session_id: SessionId) -> None:
        session_id = SessionId(session_id)
        await self._call("DELETE", f"{session_id}/", expect=(204,))

    # -- batches -----------------------------------------------------------

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        checked = list({check_record(r).session_id: r for r in records}.values())  # the last one wins
        for chunk in _chunks(checked, self.bulk_limit):
            body = {"sessions": [_record_json(record) for record in chunk]}
            await self._call("POST", "bulk-save/", body, expect=(200,))

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = list(dict.fromkeys(SessionId(sid) for sid in session_ids))
        found: dict[SessionId, SessionRecord] = {}
        for chunk in _chunks(wanted, self.bulk_limit):
            answer = await self._call(
                "POST", "bulk-load/", {"session_ids": [str(s) for s in chunk]}, expect=(200,)
            )
            items = answer.get("sessions") if isinstance(answer, dict) else None
            if not isinstance(items, list):
                raise SerializationError(
                    f"{self.url}bulk-load/: expected {{'sessions': [...]}}, got {answer!r:.200}"
                )
            for item in items:
                record = _record(item)
                found[record.session_id] = record
        return found

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        doomed = list(dict.fromkeys(SessionId(sid) for sid in session_ids))
        for chunk in _chunks(doomed, self.bulk_limit):
            await self._call("POST", "bulk-delete/", {"session_ids": [str(s) for s in chunk]}, expect=(200,))

    # -- plumbing ----------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        expect: tuple[int, ...],
        absent_is_not_found: bool = False,
    ) -> Any:
        url = self.url + path
        # orjson: a 10,000-record bulk body is encoded and decoded several times faster.
        content = None if body is None else orjson.dumps(body)
        headers = self._headers if content is None else {**self._headers, "Content-Type": "application/json"}
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                client = await self._client()
                response = await client.request(
                    method, url, content=content, headers=headers, timeout=self.timeout
                )
            except httpx.TransportError as exc:  # refused, reset, timed out, protocol errors
                if last:
                    raise BackendError(f"{method} {url}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(_backoff(attempt))
                continue
            if response.status_code in expect:
                return _json(response) if response.status_code != 204 else None
            if response.status_code in RETRIED_STATUSES and not last:
                await asyncio.sleep(_backoff(attempt, response.headers.get("Retry-After")))
                continue
            raise _error_for(response, absent_is_not_found)
        raise AssertionError("unreachable")


class _LoopClient:
    """One event loop's client, and the async generator that closes it when the loop ends."""

    __slots__ = ("client", "hook")

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.hook: AsyncIterator[None] | None = None


async def _close_with_loop(client: httpx.AsyncClient) -> AsyncIterator[None]:
    """Held open for the life of the loop; ``asyncio.run()`` finalises it, which closes the client."""
    try:
        yield
    finally:
        await client.aclose()


def _backoff(attempt: int, retry_after: str | None = None) -> float:
    wait: float = BACKOFF * 2**attempt
    if retry_after and retry_after.isdigit():
        wait = max(wait, float(retry_after))
    return min(wait, MAX_BACKOFF)


def _json(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except ValueError as exc:  # orjson.JSONDecodeError is one
        raise SerializationError(
            f"{response.request.method} {response.request.url}: answered {response.status_code} "
            f"with a body that is not JSON: {response.text[:200]!r}"
        ) from exc


def _error_for(response: httpx.Response, absent_is_not_found: bool) -> StorageError:
    where = f"{response.request.method} {response.request.url}"
    detail = response.text[:300]
    error: StorageError
    if response.status_code == 404 and absent_is_not_found:
        error = NotFound(f"no session at {response.request.url}")
    elif response.status_code == 409:
        error = ConflictError(f"{where}: 409 {detail}")
    else:
        error = BackendError(f"{where}: HTTP {response.status_code} {detail}")
    error.__cause__ = httpx.HTTPStatusError(
        f"HTTP {response.status_code}", request=response.request, response=response
    )
    return error


def _record(item: object, expected_id: SessionId | None = None) -> SessionRecord:
    """A record from the API's JSON; ``SerializationError`` for anything else."""
    try:
        if not isinstance(item, dict):
            raise TypeError(f"expected an object, got {type(item).__name__}")
        session_id = SessionId.parse(item["session_id"])
        record = SessionRecord(session_id, _as_int(item["agent_id"]), _as_int(item["started_at_ns"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SerializationError(
            f"the API answered a session that does not decode: {item!r:.200} ({exc})"
        ) from exc
    if expected_id is not None and record.session_id != expected_id:
        raise SerializationError(f"asked for session {expected_id}, the API answered {record.session_id}")
    return record


def _record_json(record: SessionRecord) -> dict[str, object]:
    return {
        "session_id": str(record.session_id),
        "agent_id": str(record.agent_id),
        "started_at_ns": str(record.started_at_ns),
    }


def _as_int(value: object) -> int:
    """The API writes big integers as decimal strings; a JSON integer is accepted too."""
    if type(value) is int:
        return value
    if type(value) is str and value.isascii() and value.isdigit():
        return int(value)
    raise TypeError(f"expected an integer or a string of digits, got {value!r:.40}")


def _chunks(items: Sequence[SessionId] | Sequence[SessionRecord], size: int) -> Iterable[Any]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
