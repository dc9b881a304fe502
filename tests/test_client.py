"""``HttpSessionStore`` and the bulk endpoints, through a real uvicorn server on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from sessions_app.client import HttpSessionStore
from sessions_app.models import ExecutionSession
from sessions_app.storage import (
    BackendError,
    ConflictError,
    NotFound,
    SerializationError,
    SessionId,
    SessionRecord,
    assert_session_store_conformance,
)
from sessions_app.storage.types import AGENT_ID_MAX, STARTED_AT_NS_MAX

from .servers import ROOT, free_port, subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def server(django_db_setup, django_db_blocker) -> Iterator[str]:
    """uvicorn serving the project on the test database; the sessions collection URL."""
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    with uvicorn_server(url, env={"SESSIONS_MAX_BULK": "50"}) as base:
        yield f"{base}/api/sessions/"


@pytest.fixture
def token(make_user) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=make_user("view", "add", "change", "delete", username="agent")).key


def token_for(make_user, *actions: str) -> str:
    from rest_framework.authtoken.models import Token

    return Token.objects.create(
        user=make_user(*actions, username="only-" + "-".join(actions or ("none",)))
    ).key


# -- the contract over HTTP ----------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        SessionRecord(SessionId.new(), 42, 1_764_067_200_123_456_789),
        SessionRecord(SessionId(b"\x00" * 16), 0, 0),
        SessionRecord(SessionId(b"\xff" * 16), AGENT_ID_MAX, STARTED_AT_NS_MAX),
    ],
    ids=["ordinary", "zeros", "maxima"],
)
async def test_the_conformance_routine_passes_over_http(server, token, record):
    async with HttpSessionStore(server, token=token) as store:
        await assert_session_store_conformance(store, record)


async def test_batch_calls_split_into_requests_of_the_bulk_limit(server, token):
    records = [SessionRecord(SessionId.new(), n, STARTED_AT_NS_MAX - n) for n in range(25)]
    async with HttpSessionStore(server, token=token, bulk_limit=10) as store:
        await store.save_many([*records, SessionRecord(records[0].session_id, 7, 7)])  # repeated: last wins
        absent = SessionId.new()
        found = await store.load_many([r.session_id for r in records] + [absent])
        assert found == {
            r.session_id: (SessionRecord(r.session_id, 7, 7) if r is records[0] else r) for r in records
        }
        await store.delete_many([r.session_id for r in records[:20]] + [absent])
        assert set(await store.load_many([r.session_id for r in records])) == {
            r.session_id for r in records[20:]
        }
        with pytest.raises(NotFound):
            await store.load(records[0].session_id)


async def test_bad_arguments_fail_before_any_request(server, token):
    async with HttpSessionStore(server, token=token) as store:
        with pytest.raises(TypeError):
            await store.save((b"\x00" * 16, 1, 1))
        with pytest.raises(ValueError, match="16 bytes"):
            await store.load(b"\x00" * 15)


# -- short-lived event loops ------------------------------------------------------


def test_calls_each_under_its_own_asyncio_run_work_and_leave_nothing_open(server, token, monkeypatch):
    """As the database store: any number of ``asyncio.run()`` in turn, each loop's client closed with it."""
    import gc
    import warnings

    from sessions_app import client as client_module

    opened: list[httpx.AsyncClient] = []

    class Recorded(httpx.AsyncClient):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            opened.append(self)

    monkeypatch.setattr(client_module.httpx, "AsyncClient", Recorded)
    store = HttpSessionStore(server, token=token)
    record = SessionRecord(SessionId.new(), 5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):
            asyncio.run(store.save(record))
            assert asyncio.run(store.load(record.session_id)) == record
            assert all(client.is_closed for client in opened)  # each loop's client closed with the loop
        gc.collect()
    assert len(opened) == 20  # one client per loop
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []

    async def aclose_then_call_again() -> None:
        await store.load(record.session_id)
        await store.aclose()
        assert opened[-1].is_closed
        assert await store.load(record.session_id) == record  # reopens
        await store.aclose()

    asyncio.run(aclose_then_call_again())
    assert all(client.is_closed for client in opened)


def test_a_client_you_pass_in_stays_yours(server, token):
    async def run() -> None:
        async with httpx.AsyncClient() as mine:
            store = HttpSessionStore(server, token=token, client=mine)
            record = SessionRecord(SessionId.new(), 6, 6)
            await store.save(record)
            await store.aclose()
            assert not mine.is_closed
            assert await store.load(record.session_id) == record  # still through it

    asyncio.run(run())


# -- errors onto the closed set -----------------------------------------------------


async def test_a_closed_port_is_a_backend_error_with_the_cause_chained():
    store = HttpSessionStore(f"http://127.0.0.1:{free_port()}/api/sessions/", retries=1)
    with pytest.raises(BackendError) as caught:
        await store.load(SessionId.new())
    assert isinstance(caught.value.__cause__, httpx.ConnectError)
    await store.aclose()


async def test_a_host_that_never_answers_is_a_backend_error_after_the_timeout(silent_host):
    store = HttpSessionStore(f"http://127.0.0.1:{silent_host}/api/sessions/", timeout=0.5, retries=1)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await store.save(SessionRecord(SessionId.new(), 1, 1))
    assert isinstance(caught.value.__cause__, httpx.TimeoutException)
    assert 1.0 <= time.monotonic() - started < 4  # two attempts of 0.5 s, and a short backoff
    await store.aclose()


async def test_no_token_is_401_and_a_token_without_permission_is_403(server, make_user):
    from asgiref.sync import sync_to_async

    readonly = await sync_to_async(token_for)(make_user, "view")
    async with HttpSessionStore(server) as anonymous, HttpSessionStore(server, token=readonly) as reader:
        with pytest.raises(BackendError, match="HTTP 401"):
            await anonymous.load(SessionId.new())
        with pytest.raises(NotFound):
            await reader.load(SessionId.new())  # view is enough to read
        for call in (
            reader.save(SessionRecord(SessionId.new(), 1, 1)),
            reader.delete_many([SessionId.new()]),
        ):
            with pytest.raises(BackendError, match="HTTP 403"):
                await call


class Canned:
    """A loopback HTTP server answering every request from a list of (status, headers, body)."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]) -> None:
        self.answers = answers
        self.requests = 0
        canned = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                status, headers, body = canned.answers[min(canned.requests, len(canned.answers) - 1)]
                canned.requests += 1
                self.send_response(status)
                for name, value in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/sessions/"
        # shutdown() waits for serve_forever's next poll: 0.5 s by default, for every test.
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def canned() -> Iterator[type[Canned]]:
    made: list[Canned] = []

    def make(answers: list[tuple[int, dict[str, str], bytes]]) -> Canned:
        made.append(Canned(answers))
        return made[-1]

    yield make
    for server in made:
        server.close()


RECORD_JSON = json.dumps({"session_id": str(SessionId(b"\x01" * 16)), "agent_id": "5", "started_at_ns": "6"})


@pytest.mark.parametrize(
    ("answers", "error", "requests"),
    [
        ([(200, {"Content-Type": "text/plain"}, b"hello")], SerializationError, 1),
        ([(200, {"Content-Type": "application/json"}, b'{"session_id": "nope"}')], SerializationError, 1),
        ([(409, {}, b'{"detail": "conflict"}')], ConflictError, 1),
        ([(500, {}, b"oops")], BackendError, 1),  # not retried: the server may be broken for good
        ([(503, {}, b"")] * 3, BackendError, 3),  # retried twice (retries=2), then given up
        ([(429, {"Retry-After": "0"}, b"")] * 3, BackendError, 3),
        ([(502, {}, b""), (200, {"Content-Type": "application/json"}, RECORD_JSON.encode())], None, 2),
    ],
    ids=["not-json", "not-a-record", "409", "500", "503-thrice", "429-thrice", "502-then-ok"],
)
async def test_answers_map_onto_the_closed_set_of_errors(canned, answers, error, requests):
    server = canned(answers)
    async with HttpSessionStore(server.url, retries=2) as store:
        if error is None:
            assert await store.load(SessionId(b"\x01" * 16)) == SessionRecord(SessionId(b"\x01" * 16), 5, 6)
        else:
            with pytest.raises(error) as caught:
                await store.load(SessionId(b"\x01" * 16))
            assert caught.value.__cause__ is not None
            if error is BackendError:
                assert str(answers[0][0]) in str(caught.value)
    assert server.requests == requests


def test_the_client_runs_without_django_settings(server, token):
    """A process with only the client (no DJANGO_SETTINGS_MODULE) runs the conformance routine."""
    script = f"""
import asyncio, sys
from sessions_app.client import HttpSessionStore
from sessions_app.storage import SessionId, SessionRecord, assert_session_store_conformance
import django.conf
async def main():
    async with HttpSessionStore({server!r}, token={token!r}) as store:
        await assert_session_store_conformance(store, SessionRecord(SessionId.new(), 3, 4))
asyncio.run(main())
assert not django.conf.settings.configured
print("conformant")
"""
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "conformant"


# -- the bulk endpoints ----------------------------------------------------------------


def post(server: str, token: str | None, path: str, body: object) -> httpx.Response:
    headers = {"Authorization": f"Token {token}"} if token else {}
    return httpx.post(server + path, json=body, headers=headers, timeout=30)


def record_body(n: int, **changes: object) -> dict[str, object]:
    return {"session_id": str(SessionId.new()), "agent_id": n, "started_at_ns": str(n), **changes}


def test_bulk_save_is_all_or_nothing_and_names_each_bad_item(server, token):
    good = record_body(1)
    bad = [
        record_body(2, agent_id=-1),
        record_body(3, started_at_ns="1.5"),
        {"agent_id": 4, "started_at_ns": "4"},
        "not an object",
    ]
    response = post(server, token, "bulk-save/", {"sessions": [good, *bad]})
    assert response.status_code == 400
    errors = response.json()["sessions"]
    assert set(errors) == {"1", "2", "3", "4"}
    assert set(errors["1"]) == {"agent_id"} and set(errors["2"]) == {"started_at_ns"}
    assert set(errors["3"]) == {"session_id"} and set(errors["4"]) == {"non_field_errors"}
    assert ExecutionSession.objects.count() == 0  # the good one was not written either


def test_bulk_save_with_a_repeated_id_keeps_the_last_and_bulk_load_leaves_out_absent_ids(server, token):
    first = record_body(1)
    last = {**first, "agent_id": 2, "started_at_ns": "18446744073709551615"}
    assert post(server, token, "bulk-save/", {"sessions": [first, last]}).json() == {"saved": 1}
    absent = str(SessionId.new())
    loaded = post(server, token, "bulk-load/", {"session_ids": [first["session_id"], absent]}).json()
    assert [(s["session_id"], s["agent_id"], s["started_at_ns"]) for s in loaded["sessions"]] == [
        (first["session_id"], "2", "18446744073709551615")
    ]
    deleted = post(server, token, "bulk-delete/", {"session_ids": [first["session_id"], absent]})
    assert deleted.json() == {"deleted": 1}


@pytest.mark.parametrize("path", ["bulk-load/", "bulk-delete/"])
def test_a_malformed_id_in_a_bulk_call_is_a_400_naming_its_index(server, token, path):
    response = post(server, token, path, {"session_ids": [str(SessionId.new()), "nope", 7]})
    assert response.status_code == 400
    assert set(response.json()["session_ids"]) == {"1", "2"}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("bulk-save/", {"sessions": [record_body(n) for n in range(51)]}),
        ("bulk-load/", {"session_ids": [str(SessionId.new()) for _ in range(51)]}),
        ("bulk-delete/", {"session_ids": [str(SessionId.new()) for _ in range(51)]}),
    ],
)
def test_more_than_max_bulk_items_is_a_400_and_writes_nothing(server, token, path, body):
    response = post(server, token, path, body)  # the server runs with MAX_BULK = 50
    assert response.status_code == 400
    assert "At most 50" in json.dumps(response.json())
    assert ExecutionSession.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "body", "needs"),
    [
        ("bulk-save/", {"sessions": [record_body(1)]}, {"add", "change"}),
        ("bulk-load/", {"session_ids": [str(SessionId.new())]}, {"view"}),
        ("bulk-delete/", {"session_ids": [str(SessionId.new())]}, {"delete"}),
    ],
)
@pytest.mark.parametrize("holds", [(), ("view",), ("add",), ("add", "change"), ("delete",)])
def test_bulk_calls_need_the_permissions_of_their_single_calls(server, make_user, path, body, needs, holds):
    assert post(server, None, path, body).status_code == 401
    response = post(server, token_for(make_user, *holds), path, body)
    assert response.status_code == (200 if needs <= set(holds) else 403)
    if path == "bulk-save/":
        assert ExecutionSession.objects.count() == (1 if needs <= set(holds) else 0)
