"""A Redis cache that goes away and comes back: the API keeps answering, the outage is logged twice.

And each process keeps one bounded pool of Redis connections, whatever the
request rate (``sessions_app.caching``).
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import logging
import warnings
from collections.abc import Iterator

import httpx
import pytest
from django.core.cache.backends.base import CacheKeyWarning

from sessions_app import caching
from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

from .conftest import missing
from .servers import RedisServer, subprocess_database_url, uvicorn_server

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    try:
        server = RedisServer(tmp_path)
    except FileNotFoundError as exc:
        missing("redis-server", str(exc))
    with server:
        yield server


@pytest.fixture
def on_private_redis(settings, redis_server) -> RedisServer:
    """Django's default cache (auth generation, throttles) on the private server."""
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis_server.url,
            "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 0.5},
        }
    }
    return redis_server


def outage_count(alias: str) -> float:
    return caching.OUTAGES.labels(alias)._value.get()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends_not_per_request(on_private_redis, api, caplog):
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=1, started_at_ns=1)
    url = f"/api/sessions/{sid}/"
    assert api.get(url).status_code == 200
    before = outage_count("default")
    on_private_redis.kill()
    with caplog.at_level(logging.WARNING):
        statuses = [api.get(url).status_code for _ in range(10)]
        assert statuses == [200] * 10  # the database answers who the caller is
        on_private_redis.start()
        assert api.get(url).status_code == 200
        assert api.get(url).status_code == 200
    cache_lines = [record.getMessage() for record in caplog.records if record.name == "sessions_app.cache"]
    assert len(cache_lines) == 2, cache_lines
    assert "is unavailable" in cache_lines[0] and "answers again" in cache_lines[1]
    assert outage_count("default") == before + 1


def test_the_tolerant_cache_never_raises():
    cache = caching.tolerant("nowhere")
    caching._shared["nowhere"] = None  # not configured: caches["nowhere"] raises
    try:
        assert cache.get("key", "default") == "default"
        assert cache.set("key", "value", 5) is False
    finally:
        caching._shared.pop("nowhere", None)
        caching._down.pop("nowhere", None)


def test_a_redis_cache_is_one_object_for_every_request_context(on_private_redis):
    seen = {id(contextvars.Context().run(lambda: caching.cache_for("default"))) for _ in range(5)}
    assert len(seen) == 1
    assert not caching.in_process(caching.cache_for("default"))


def test_an_in_process_cache_is_one_object_on_djangos_own_storage(settings):
    """The app's ``LocMemCache`` object skips the per-call key check, and shares the alias' dictionary."""
    from django.core.cache import caches

    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "shared-test"}
    }
    mine = caching.cache_for("default")
    assert isinstance(mine, caching.AppKeysLocMemCache)
    assert caching.in_process(mine)
    assert mine is contextvars.Context().run(lambda: caching.cache_for("default"))
    caches["default"].set("written-by-django", 1)
    assert mine.get("written-by-django") == 1
    mine.set("written-here", 2)
    assert caches["default"].get("written-here") == 2
    assert mine.incr("written-here") == caches["default"].get("written-here") == 3
    # Django's object checks each key against memcached's rules (a warning); this one does not.
    with pytest.warns(CacheKeyWarning):
        caches["default"].get("a key with spaces")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert mine.get("a key with spaces") is None


@pytest.mark.slow
def test_a_worker_keeps_a_bounded_pool_of_redis_connections_whatever_the_rate(
    redis_server, django_db_setup, django_db_blocker, make_user
):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("view")).key
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=1, started_at_ns=1)
    with django_db_blocker.unblock():
        database_url = subprocess_database_url()
    env = {"DJANGO_REDIS_URL": redis_server.url, "DJANGO_REDIS_MAX_CONNECTIONS": "8"}
    headers = {"Authorization": f"Token {token}", "Connection": "close"}
    # Every request on a new connection (none kept alive); one client for all
    # of them (a client per request costs more than the request: its TLS context).
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with (
        uvicorn_server(database_url, env=env) as base,
        httpx.Client(base_url=base, headers=headers, timeout=10, limits=no_keep_alive) as client,
    ):
        before = redis_server.stats()["total_connections_received"]

        def call(_: int) -> int:
            return client.get(f"/api/sessions/{sid}/").status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(400)))
        after = redis_server.stats()
    assert statuses == [200] * 400
    # 400 requests, 16 at a time: at most the pool's 8 connections (and the
    # server's own check at start-up), not one per request.
    assert after["total_connections_received"] - before <= 10
