"""The database server going away and coming back: clear errors, nothing half-written, recovery in the
same process. On PostgreSQL (the native path) and MariaDB (Django's connection through sync_to_async);
SQLite has no server to lose."""

import concurrent.futures
import time

import httpx
import pytest
from django.db import connection, connections

from sessions_app.models import ExecutionSession
from sessions_app.storage import BackendError, DjangoSessionStore, SessionId, SessionRecord

from .servers import loopback_settings, subprocess_database_url, uvicorn_server
from .tcp_proxy import SwitchableProxy

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def proxy():
    if connection.vendor == "sqlite":
        pytest.skip("needs a database server to lose; runs on PostgreSQL and MariaDB")
    settings = connection.settings_dict
    default_port = 5432 if connection.vendor == "postgresql" else 3306
    proxy = SwitchableProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or default_port))).start()
    yield proxy
    proxy.cut()


@pytest.fixture
def faulty_alias(proxy):
    """A database alias that reaches the test database through the proxy."""
    alias = "through_proxy"
    connections.settings[alias] = loopback_settings(proxy.port)
    yield alias
    connections[alias].close()
    del connections.settings[alias]


async def test_the_async_store_raises_backend_error_while_the_server_is_gone_and_recovers(
    proxy, faulty_alias
):
    if connection.vendor != "postgresql":
        pytest.skip(
            "the store's own connections through the proxy need the native path; elsewhere Django's "
            "connection for a second alias is refused by pytest-django, and the API test below covers it"
        )
    store = DjangoSessionStore(using=faulty_alias)
    assert store.path_name == "PostgresPath"
    kept = SessionRecord(SessionId.new(), 1, 1)
    await store.save(kept)

    proxy.cut()
    lost = SessionRecord(SessionId.new(), 2, 2)
    for call, argument in [
        (store.save, lost),
        (store.load, kept.session_id),
        (store.delete, kept.session_id),
    ]:
        with pytest.raises(BackendError) as caught:
            await call(argument)
        assert caught.value.__cause__ is not None

    proxy.restore()
    assert await store.load(kept.session_id) == kept
    await store.save(lost)
    assert await store.load(lost.session_id) == lost
    await store.aclose()


@pytest.fixture
def server(proxy, make_user):
    """uvicorn serving the project, its database reached through the proxy."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="faults")).key
    with uvicorn_server(subprocess_database_url(port=proxy.port)) as base:
        client = httpx.Client(base_url=base, headers={"Authorization": f"Token {token}"}, timeout=30)
        yield client
        client.close()


def test_the_api_answers_503_json_while_the_server_is_gone_and_recovers(proxy, server):
    kept = ExecutionSession.objects.create(agent_id=1, started_at_ns=1)
    assert server.get(f"/api/sessions/{kept.pk}/").status_code == 200

    proxy.cut()
    lost = SessionId.new()
    calls = [
        ("GET", f"/api/sessions/{kept.pk}/", None),
        ("GET", "/api/sessions/", None),
        ("PUT", f"/api/sessions/{lost}/", {"agent_id": 2, "started_at_ns": "2"}),
        ("DELETE", f"/api/sessions/{kept.pk}/", None),
    ]
    # All four at once: a call that needs a new connection waits out the pool's
    # timeout (10 s on PostgreSQL) before its 503; one after another, that was
    # most of this test's time.
    with concurrent.futures.ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda call: server.request(call[0], call[1], json=call[2]), calls))
    for (method, path, _), response in zip(calls, answers, strict=True):
        assert response.status_code == 503, (method, path, response.status_code, response.text[:200])
        assert response.headers["content-type"].startswith("application/json")

    proxy.restore()
    deadline = time.monotonic() + 20
    while server.get(f"/api/sessions/{kept.pk}/").status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover within 20 s of the database's return"
        time.sleep(0.5)
    assert not ExecutionSession.objects.filter(pk=lost).exists()  # the failed PUT left nothing behind
    assert ExecutionSession.objects.filter(pk=kept.pk).exists()  # nor did the failed DELETE remove anything
    assert server.put(f"/api/sessions/{lost}/", json={"agent_id": 2, "started_at_ns": "2"}).status_code == 201
