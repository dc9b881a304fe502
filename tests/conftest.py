"""Shared fixtures. The database under test is whatever ``DATABASE_URL`` selects (SQLite by default)."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from collections.abc import Iterator
from typing import NoReturn

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection, connections

from sessions_app.storage import DjangoSessionStore, InMemorySessionStore

from . import quick_flush
from .servers import RedisServer, loopback_settings
from .tcp_proxy import SwitchableProxy

# Transactional tests empty only the tables they wrote to (tests/quick_flush.py).
quick_flush.install()


def missing(service: str, reason: str) -> NoReturn:
    """A service or tool the test needs is absent: a skip on a contributor's machine, a failure under CI.

    For what the test command expects to find (a database server, Redis,
    pgbouncer, node, chromium, wrk): CI (the ``CI`` environment variable set)
    has them all, so their absence there is a broken machine, not a test that
    does not apply. What truly does not apply (a PostgreSQL-only test on
    SQLite) skips with ``pytest.skip`` as before.
    """
    if os.environ.get("CI"):
        pytest.fail(f"{service} is missing and CI runs this test: {reason}", pytrace=False)
    pytest.skip(f"{service} is missing: {reason}")


# Under pytest-xdist (scripts/test.sh runs ``-n 2``) each of these modules
# runs whole on one worker: they share something outside the test database
# (a Redis database they flush, on the worker's own redis-server) or start
# an expensive server once per module, which a split would start once per
# worker. Every other test goes
# to whichever worker is free. (xdist's own ``xdist_group`` mark renames the
# node ids, which pytest 9 no longer lets it do: the groups would not hold.)
ONE_WORKER_MODULES = {
    "test_agent_keys",
    "test_cached_store",
    "test_client",
    "test_connection_kill",
    "test_database_alias",
    "test_generated_client",
    "test_pgbouncer",
    "test_read_timeout",
    "test_shared_cache",
}


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    from xdist.scheduler import LoadScopeScheduling

    class ModulesKeptTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if path.rsplit("/", 1)[-1].removesuffix(".py") in ONE_WORKER_MODULES:
                return path
            return nodeid

    return ModulesKeptTogether(config, log)


def pytest_report_header(config: pytest.Config) -> str:
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"sessions_app database under test: {engine}"


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """Close the connections the tests' stores opened outside the main thread.

    The async tests run Django-cursor calls in asgiref's worker thread, which
    keeps its own connection, and PostgreSQL refuses to drop the test
    database while any connection is open.
    """
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture(scope="session", autouse=True)
def _rows_migrate_made(django_db_setup, django_db_blocker):
    """What migrate left in the tables post_migrate fills: a teardown that finds them so skips the flush."""
    with django_db_blocker.unblock():
        quick_flush.record_migrated_rows(connection)


@pytest.fixture(autouse=True)
async def _close_pools_after_each_test():
    """Each test runs in its own event loop; close the PostgreSQL pools it opened in it."""
    yield
    try:
        from sessions_app.storage.db.postgresql import close_loop_pools
    except ImportError:
        return
    await close_loop_pools()


@pytest.fixture
def django_store(transactional_db) -> DjangoSessionStore:
    """The Django store on its default path: native async where the database has one."""
    store = DjangoSessionStore()
    expected = {"postgresql": "PostgresPath", "sqlite": "SQLitePath"}.get(connections["default"].vendor)
    assert store.path_name == (expected or "sync_to_async")
    return store


@pytest.fixture
def memory_store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture
def django_threaded_store(transactional_db) -> DjangoSessionStore:
    """The Django store on its portable path: Django's cursor through sync_to_async."""
    return DjangoSessionStore(native_async=False)


@pytest.fixture(params=["memory", "django", "django_threaded"])
def store(request, transactional_db):
    """Each contract test runs once per store.

    Both ask for ``transactional_db``: the Django store's queries run in
    asgiref's worker thread, outside any test transaction.
    """
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def vendor() -> str:
    return connections["default"].vendor


@pytest.fixture
def make_user(db, django_user_model):
    """``make_user("view", "add")``: a user holding exactly those ExecutionSession permissions."""
    from django.contrib.auth.models import Permission

    def make(*actions: str, username: str | None = None):
        user = django_user_model.objects.create_user(
            username=username or "user-" + "-".join(actions or ("none",)), password="pw-Secret-123"
        )
        codenames = [f"{action}_executionsession" for action in actions]
        user.user_permissions.set(Permission.objects.filter(codename__in=codenames))
        return user

    return make


@pytest.fixture
def token_client(db):
    """``token_client(user)``: a new token for the user, and a DRF client that sends it."""
    from rest_framework.authtoken.models import Token
    from rest_framework.test import APIClient

    def make(user):
        token = Token.objects.create(user=user)
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
        return client, token

    return make


@pytest.fixture
def api(make_user, token_client):
    """A DRF client logged in (by token) as a user with every session permission."""
    client, _ = token_client(make_user("view", "add", "change", "delete", username="operator"))
    return client


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """PBKDF2 is slow on purpose; the tests create many users."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _fresh_auth_cache():
    """Each test starts with no cached auth answers.

    Inside a test's transaction nothing commits, so the signals that retire
    cached answers never fire; and SQLite hands the next test's user the
    same primary key.
    """
    from django.core.cache import caches

    from sessions_app.conf import app_settings

    caches[app_settings.AUTH_CACHE_ALIAS].clear()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``redis://127.0.0.1:<port>``: a Redis of this test process' own (a private ``redis-server``).

    Tests that flush a Redis database or read everything in it use this one,
    not a server they share with other test runs (the test command runs its
    cells side by side) or with anything else on the machine. Add ``/<db>``.
    """
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"))
    except FileNotFoundError as exc:
        missing("redis-server", str(exc))
    with server:
        yield server.url.rsplit("/", 1)[0]


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A loopback port that accepts TCP connections and never says a word."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join(5)
    for sock in [*accepted, listener]:
        sock.close()


@pytest.fixture
def proxied_alias() -> Iterator[tuple[str, SwitchableProxy]]:
    """An alias that reaches the PostgreSQL test database through a proxy the test can cut."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server to lose (runs when DATABASE_URL points at PostgreSQL)")
    settings = connection.settings_dict
    proxy = SwitchableProxy((settings["HOST"] or "127.0.0.1", int(settings["PORT"] or 5432))).start()
    connections.settings["through_proxy"] = loopback_settings(proxy.port)
    yield "through_proxy", proxy
    proxy.cut()
    del connections.settings["through_proxy"]


@pytest.fixture
def silent_alias(silent_host) -> Iterator[str]:
    """An alias whose PostgreSQL host accepts connections and never answers."""
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server (runs when DATABASE_URL points at PostgreSQL)")
    connections.settings["silent"] = loopback_settings(silent_host)
    yield "silent"
    del connections.settings["silent"]


@pytest.fixture
def low_throttle_rates(monkeypatch):
    """Rates of 3 (anonymous) and 5 (per user) a minute, with fresh counters.

    DRF reads the rates into a class attribute once, so the test sets that.
    """
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "3/minute", "user": "5/minute"})
    cache.clear()
    yield
    cache.clear()
