"""Two uvicorn workers sharing a Redis cache: a revocation reaches both at once, and Redis holds no secret."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from sessions_app.models import AgentKey, ExecutionSession
from sessions_app.storage import SessionId

from .servers import subprocess_database_url, uvicorn_server, worker_count

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

REDIS_DB = 14  # on this test process' own redis-server (tests/conftest.py)
CALLS = 24  # each on a new connection, so both workers answer some


@pytest.fixture(scope="module")
def redis_url(redis_server) -> str:
    return f"{redis_server}/{REDIS_DB}"


@pytest.fixture(scope="module")
def redis_client(redis_url) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    client.ping()
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


@pytest.fixture(scope="module")
def metrics_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("metrics")


@pytest.fixture(scope="module")
def base(django_db_setup, django_db_blocker, redis_url, redis_client, metrics_dir) -> Iterator[str]:
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    env = {
        "DJANGO_REDIS_URL": redis_url,
        "SESSIONS_AUTH_FAILURE_RATE": "100000/min",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    with uvicorn_server(url, workers=2, env=env) as served:
        yield served


def test_calls_on_new_connections_reach_both_workers(base, session_url, make_user, metrics_dir, tmp_path):
    """What the tests below rely on: their calls, each on a new connection, spread over both workers."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("view", username="spread")).key
    for _ in range(10):  # a worker still starting gets no connection: a few more rounds reach it
        assert statuses(base, session_url, {"Authorization": f"Token {token}"}) == {200}
        loads = [worker_count(path, tmp_path, "load") for path in sorted(metrics_dir.glob("counter_*.db"))]
        if len(loads) == 2 and all(loads):
            break
    assert len(loads) == 2 and all(loads), loads


@pytest.fixture(autouse=True)
def shared_cache(settings, redis_url):
    """This process uses the workers' Redis too: its changes set the generation they read."""
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url}
    }


def statuses(base: str, url: str, headers: dict[str, str]) -> set[int]:
    """Each call on a new connection (both workers take some)."""
    seen = set()
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    headers = {**headers, "Connection": "close"}
    with httpx.Client(base_url=base, timeout=10, headers=headers, limits=no_keep_alive) as client:
        for _ in range(CALLS):
            seen.add(client.get(url).status_code)
    return seen


@pytest.fixture
def session_url() -> str:
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=42, started_at_ns=1)
    return f"/api/sessions/{sid}/"


def test_a_revoked_key_is_refused_by_every_worker_on_the_next_request(base, session_url):
    row, key = AgentKey.objects.create_key(name="fleet", agent_ids=[42])
    headers = {"Authorization": f"Api-Key {key}"}
    assert statuses(base, session_url, headers) == {200}
    row.revoked = True
    row.save()
    assert statuses(base, session_url, headers) == {401}


@pytest.mark.parametrize("change", ["token deleted", "user deactivated", "permission removed"])
def test_operator_changes_reach_every_worker_on_the_next_request(base, session_url, make_user, change):
    from rest_framework.authtoken.models import Token

    user = make_user("view")
    token = Token.objects.create(user=user)
    headers = {"Authorization": f"Token {token.key}"}
    assert statuses(base, session_url, headers) == {200}
    if change == "token deleted":
        token.delete()
    elif change == "user deactivated":
        user.is_active = False
        user.save()
    else:
        user.user_permissions.clear()
    assert statuses(base, session_url, headers) == {403 if change == "permission removed" else 401}


def test_redis_holds_no_secret_after_authenticated_requests(base, session_url, make_user, redis_client):
    from rest_framework.authtoken.models import Token

    user = make_user("view")
    token = Token.objects.create(user=user)
    _, key = AgentKey.objects.create_key(name="fleet", agent_ids=[42])
    assert statuses(base, session_url, {"Authorization": f"Token {token.key}"}) == {200}
    assert statuses(base, session_url, {"Authorization": f"Api-Key {key}"}) == {200}
    assert statuses(base, session_url, {"Authorization": f"Api-Key {key[:-3]}bad"}) == {401}  # counted
    user.refresh_from_db()
    secrets = [token.key, key, key.partition(".")[2], user.password]
    everything = {name: redis_client.dump(name) or b"" for name in redis_client.scan_iter("*")}
    assert everything, "nothing reached Redis: the test would prove nothing"
    for name, value in everything.items():
        for secret in secrets:
            assert secret.encode() not in name and secret.encode() not in value
        assert b"django.contrib.auth" not in value and b"authtoken" not in value
