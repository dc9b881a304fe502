"""The detail calls served on the event loop (``SESSIONS_APP["ASYNC_DETAIL_VIEW"]``).

In-process through Django's ASGI handler (``AsyncClient``), one event loop
per test as under a server: the same answers, permissions, throttles and
auth-cache rules as the synchronous view (``test_api.py``,
``test_auth_cache.py``, ``test_security.py``), on the store's native path,
with DRF's policies in the loop while they answer from memory. uvicorn
serves this route too in ``test_client.py``, ``test_api_fuzz.py`` and
``test_database_faults.py`` (``aa_project.asgi`` turns the setting on).
"""

from __future__ import annotations

import json
import logging
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connection
from django.test import AsyncClient
from rest_framework.authtoken.models import Token
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.test import APIClient

from sessions_app.api import policies
from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

from .test_api import HOLDINGS, PERMISSION_CASES, SID, stored, url
from .test_store_failures import plant_undecodable_row

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.urls("tests.urls_async_detail")]

DETAIL_CASES = [case for case in PERMISSION_CASES if case[1] == url(SID)]


class Caller:
    """An ``AsyncClient`` that sends a token and JSON bodies."""

    def __init__(self, token: str | None = None) -> None:
        self.client = AsyncClient()
        self.headers = {"Authorization": f"Token {token}"} if token else {}

    async def __call__(self, method: str, path: str, body: object = None, **headers: str):
        kwargs: dict = {"headers": {**self.headers, **headers}}
        if body is not None:
            kwargs.update(data=json.dumps(body), content_type="application/json")
        return await getattr(self.client, method)(path, **kwargs)


@pytest.fixture
def caller_for(make_user):
    """``caller_for("view", ...)``: a ``Caller`` with a token of a user holding those permissions."""

    def make(*holds: str, username: str | None = None) -> Caller:
        user = make_user(*holds, username=username)
        return Caller(Token.objects.create(user=user).key)

    return make


@pytest.fixture
def operator(caller_for) -> Caller:
    return caller_for("view", "add", "change", "delete", username="operator")


@pytest.fixture
def thread_hops(monkeypatch):
    """The policy checks ``run_policy`` sent to a worker thread, by name."""
    sent: list[str] = []
    real = policies.sync_to_async

    def counting(check):
        sent.append(check.__name__)
        return real(check)

    monkeypatch.setattr(policies, "sync_to_async", counting)
    return sent


# -- the calls -----------------------------------------------------------------


async def test_put_get_delete_answer_as_the_synchronous_view(operator):
    body = {"agent_id": str(2**63 - 1), "started_at_ns": 2**64 - 1}
    created = await operator("put", url(SID), body)
    assert created.status_code == 201
    expected = {
        "session_id": str(SID),
        "agent_id": str(2**63 - 1),
        "started_at_ns": str(2**64 - 1),
        "started_at": "2554-07-21T23:34:33.709551Z",
    }
    assert created.json() == expected
    assert (await operator("put", url(SID), body)).status_code == 200  # replaced
    loaded = await operator("get", url(SID.hex()))
    assert (loaded.status_code, loaded.json()) == (200, expected)
    assert loaded["content-type"] == "application/json"
    assert await sync_to_async(stored)(SID) == (2**63 - 1, 2**64 - 1)

    deleted = await operator("delete", url(SID))
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert "content-type" not in deleted
    assert (await operator("delete", url(SID))).status_code == 204  # absent is fine
    assert (await operator("get", url(SID))).status_code == 404
    assert await sync_to_async(stored)(SID) is None


@pytest.mark.parametrize("accept", [None, "application/json", "application/json; indent=4", "*/*; indent=2"])
async def test_json_answers_are_drfs_rendering_byte_for_byte(operator, accept, monkeypatch):
    """``answer()`` renders JSON itself; status, bytes and headers are what a DRF ``Response`` gives."""
    from sessions_app.api.views import ExecutionSessionViewSet

    headers = {} if accept is None else {"Accept": accept}

    async def answers() -> list[tuple]:
        calls = [
            await operator("put", url(SID), {"agent_id": 9, "started_at_ns": 2**64 - 1}, **headers),
            await operator("put", url(SID), {"agent_id": 9, "started_at_ns": 2**64 - 1}, **headers),
            await operator("get", url(SID), **headers),
            await operator("delete", url(SID), **headers),
        ]
        return [(a.status_code, a.content, a.get("Content-Type"), a["Vary"], a["Allow"]) for a in calls]

    ours = await answers()
    assert [status for status, *_ in ours] == [201, 200, 200, 204]
    monkeypatch.setattr(
        ExecutionSessionViewSet, "answer", lambda self, data, status=200: Response(data, status=status)
    )
    assert await answers() == ours


async def test_head_and_options_answer(operator):
    await operator("put", url(SID), {"agent_id": 1, "started_at_ns": 1})
    head = await operator("head", url(SID))
    assert (head.status_code, head.content) == (200, b"")
    options = await operator("options", url(SID))
    assert options.status_code == 200
    assert set(options.json()["actions"]) == {"PUT"}


async def test_patch_changes_only_the_named_field(operator):
    await operator("put", url(SID), {"agent_id": 1, "started_at_ns": 5})
    changed = await operator("patch", url(SID), {"agent_id": 9})
    assert (changed.status_code, changed.json()["agent_id"]) == (200, "9")
    assert await sync_to_async(stored)(SID) == (9, 5)
    assert (await operator("patch", url(SessionId.new()), {"agent_id": 9})).status_code == 404


@pytest.mark.parametrize("bad", ["nope", "0f1e2d3c", str(SID) + "0", "%00"])
async def test_a_malformed_id_is_404_for_every_method(operator, bad):
    for method, body in [("get", None), ("put", {"agent_id": 1, "started_at_ns": 1}), ("delete", None)]:
        response = await operator(method, url(bad), body)
        assert response.status_code == 404, method
        assert response.json() == {"detail": "Not found."}


async def test_a_bad_body_is_400_naming_each_field_and_writes_nothing(operator):
    response = await operator("put", url(SID), {"agent_id": -1, "started_at_ns": "2" * 21})
    assert response.status_code == 400
    assert set(response.json()) == {"agent_id", "started_at_ns"}
    other = SessionId.new()
    mismatch = await operator("put", url(SID), {"session_id": str(other), "agent_id": 1, "started_at_ns": 1})
    assert mismatch.status_code == 400
    assert "session_id" in mismatch.json()
    not_json = await operator.client.put(
        url(SID), data=b'{"agent_id": ', content_type="application/json", headers=operator.headers
    )
    assert not_json.status_code == 400
    assert await sync_to_async(stored)(SID) is None


async def test_an_undecodable_row_is_a_json_500_logged_with_its_id(operator, caplog):
    sid = SessionId.new()
    await sync_to_async(plant_undecodable_row)(sid)
    with caplog.at_level(logging.ERROR, logger="sessions_app.api"):
        response = await operator("get", url(sid))
    assert response.status_code == 500
    assert "does not decode" in response.json()["detail"]
    assert any(str(sid) in r.getMessage() for r in caplog.records if r.name == "sessions_app.api")


async def test_writes_are_logged_with_the_user_and_the_session_id(operator, caplog):
    with caplog.at_level(logging.INFO, logger="sessions_app.api"):
        await operator("put", url(SID), {"agent_id": 1, "started_at_ns": 1})
        await operator("delete", url(SID))
    records = [r for r in caplog.records if r.name == "sessions_app.api"]
    assert [r.action for r in records] == ["created", "deleted"]
    assert all(r.session_id == str(SID) and "operator" in r.getMessage() for r in records)


async def test_the_browsable_api_renders_its_page(caller_for):
    viewer = await sync_to_async(caller_for)("view", "change", username="browser")
    await sync_to_async(ExecutionSession.objects.create)(session_id=SID, agent_id=3, started_at_ns=3)
    page = await viewer("get", url(SID), Accept="text/html")
    assert page.status_code == 200
    assert page["content-type"].startswith("text/html")
    assert str(SID) in page.content.decode()


# -- who may call ----------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), [case[:3] for case in DETAIL_CASES])
async def test_anonymous_calls_are_401_with_a_token_challenge(method, path, body):
    response = await Caller()(method, path, body)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


@pytest.mark.parametrize(("method", "path", "body", "needs", "allowed"), DETAIL_CASES)
@pytest.mark.parametrize("holds", HOLDINGS)
async def test_each_call_needs_its_model_permission(caller_for, method, path, body, needs, allowed, holds):
    await sync_to_async(ExecutionSession.objects.create)(session_id=SID, agent_id=3, started_at_ns=3)
    caller = await sync_to_async(caller_for)(*holds)
    response = await caller(method, path, body)
    if needs <= set(holds):
        status, after = allowed
        assert response.status_code == status
        assert await sync_to_async(stored)(SID) == after  # the call did what it says, and only that
    else:
        assert response.status_code == 403
        assert await sync_to_async(stored)(SID) == (3, 3)


async def test_anonymous_calls_are_throttled_even_when_refused(low_throttle_rates):
    statuses = [(await Caller()("get", url(SID))).status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


async def test_each_user_is_throttled_on_their_own(low_throttle_rates, caller_for):
    first = await sync_to_async(caller_for)("view", username="first")
    second = await sync_to_async(caller_for)("view", username="second")
    statuses = [(await first("get", url(SID))).status_code for _ in range(7)]
    assert statuses == [404] * 5 + [429] * 2
    assert "Retry-After" in await first("get", url(SID))
    assert (await second("get", url(SID))).status_code == 404


# -- the policies in the loop -------------------------------------------------------


async def test_a_repeated_call_checks_its_token_and_permissions_in_the_loop(operator, thread_hops):
    assert (await operator("get", url(SID))).status_code == 404
    # First call: the token and the permissions are not cached, so each
    # check meets the database guard in the loop and runs in a thread.
    assert thread_hops == ["perform_authentication", "check_permissions"]
    thread_hops.clear()
    for _ in range(3):
        assert (await operator("get", url(SID))).status_code == 404
    assert thread_hops == []


@pytest.mark.parametrize(
    ("change", "refused_with"),
    [("delete the token", 401), ("deactivate the user", 401), ("revoke the permission", 403)],
)
async def test_a_change_saved_through_django_is_refused_on_the_next_call(make_user, change, refused_with):
    user = await sync_to_async(make_user)("view", username="changing")
    token = await sync_to_async(Token.objects.create)(user=user)
    caller = Caller(token.key)
    assert (await caller("get", url(SID))).status_code == 404  # allowed; the answers are now cached

    def apply() -> None:  # committed at once: this test's database is not in a transaction
        if change == "delete the token":
            token.delete()
        elif change == "deactivate the user":
            user.is_active = False
            user.save()
        else:
            user.user_permissions.clear()

    await sync_to_async(apply)()
    assert (await caller("get", url(SID))).status_code == refused_with


async def test_with_a_network_cache_every_check_runs_in_a_thread(operator, settings, thread_hops):
    import redis

    from sessions_app import caching
    from sessions_app.api import auth_cache

    from .conftest import missing

    server = redis.Redis(host="127.0.0.1", port=6379, db=13, socket_connect_timeout=1)
    try:
        server.ping()
    except redis.RedisError as exc:
        missing("Redis at 127.0.0.1:6379", str(exc))
    server.flushdb()
    settings.CACHES = {
        **settings.CACHES,
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:6379/13",
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        },
    }
    settings.SESSIONS_APP = {"AUTH_CACHE_ALIAS": "redis"}
    for _ in range(2):
        assert (await operator("get", url(SID))).status_code == 404
    # Never a Redis round trip on the loop: all three checks, each call.
    assert thread_hops == ["perform_authentication", "check_throttles", "check_permissions"] * 2
    # The checks did read the generation from Redis (not an error answered without it).
    assert server.exists(caching.cache_for("redis").make_key(auth_cache.GENERATION_KEY))
    server.flushdb()
    server.close()


class RecordingPermission(BasePermission):
    """Allows everything and records the thread it ran on."""

    threads: list[int] = []

    def has_permission(self, request, view) -> bool:
        self.threads.append(threading.get_ident())
        return True


class LoopSafeRecordingPermission(RecordingPermission):
    run_in_event_loop = True


@pytest.mark.parametrize(
    ("permission", "in_loop"), [(RecordingPermission, False), (LoopSafeRecordingPermission, True)]
)
async def test_a_policy_class_runs_in_the_loop_only_when_known_to_be_safe(
    operator, settings, permission, in_loop
):
    settings.SESSIONS_APP = {"PERMISSION_CLASSES": [f"{__name__}.{permission.__name__}"]}
    RecordingPermission.threads = []
    await operator("get", url(SID))
    await operator("get", url(SID))
    loop_thread = threading.get_ident()
    assert len(RecordingPermission.threads) == 2
    assert all((thread == loop_thread) is in_loop for thread in RecordingPermission.threads)


# -- the store's native path ----------------------------------------------------------


async def test_repeated_calls_open_no_new_database_connection(operator, monkeypatch):
    """The native path keeps its connection: the pool's (PostgreSQL) or its thread's (SQLite)."""
    if connection.vendor == "postgresql":
        import psycopg

        target, name = psycopg.AsyncConnection, "connect"
    elif connection.vendor == "sqlite":
        from sessions_app.storage.db import sqlite

        target, name = sqlite.sqlite3, "connect"
    else:
        pytest.skip("MySQL/MariaDB have no native path; their calls use Django's connection")
    await operator("put", url(SID), {"agent_id": 1, "started_at_ns": 1})  # the path connects once
    opened = []
    real = getattr(target, name)
    monkeypatch.setattr(target, name, lambda *args, **kwargs: opened.append(1) or real(*args, **kwargs))
    for _ in range(20):
        assert (await operator("get", url(SID))).status_code == 200
        assert (await operator("put", url(SID), {"agent_id": 2, "started_at_ns": 2})).status_code == 200
        assert (await operator("delete", url(SessionId.new()))).status_code == 204
    assert opened == []


# -- the same route under WSGI, and in the schema ---------------------------------------


def test_under_wsgi_the_async_route_still_answers(api):
    """A WSGI server runs an async view through ``async_to_sync``: slower, but the same answers."""
    assert api.put(url(SID), {"agent_id": 4, "started_at_ns": 4}, format="json").status_code == 201
    assert api.get(url(SID)).json()["agent_id"] == "4"
    assert api.delete(url(SID)).status_code == 204
    assert APIClient().get(url(SID)).status_code == 401


def test_the_schema_is_the_same_either_way(settings):
    from drf_spectacular.generators import SchemaGenerator

    async_schema = SchemaGenerator(urlconf="tests.urls_async_detail").get_schema(request=None, public=True)
    sync_schema = SchemaGenerator(urlconf="aa_project.urls").get_schema(request=None, public=True)
    assert async_schema == sync_schema
