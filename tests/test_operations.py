"""What operators rely on: the health endpoint for balancers and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from django.test import Client

from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord

pytestmark = pytest.mark.django_db(transaction=True)


def health(client: Client | None = None):
    return (client or Client()).get("/api/health/")


# -- health ------------------------------------------------------------------------


def test_health_is_200_ok_without_credentials_and_is_never_throttled(low_throttle_rates):
    for _ in range(10):  # the anonymous rate is 3 a minute
        response = health()
        assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"] == {"status": "ok"}
    assert response["Cache-Control"].startswith("max-age=0")


def test_health_reveals_no_versions_or_hosts():
    text = health().content.decode()
    for secret in ("version", "127.0.0.1", "localhost", "postgres", "sqlite", "Django", "python"):
        assert secret.lower() not in text.lower()


def test_health_is_503_while_the_database_is_cut_off_and_200_after(proxied_alias, settings):
    alias, proxy = proxied_alias
    settings.SESSIONS_APP = {"DATABASE_ALIAS": alias, "HEALTH_TIMEOUT": 2}
    assert health().status_code == 200
    proxy.cut()
    started = time.monotonic()
    response = health()
    assert response.status_code == 503
    assert time.monotonic() - started < 5
    assert response.json() == {
        "status": "unavailable",
        "checks": {
            "database": {"status": "unavailable", "reason": "error"},
            "cache:default": {"status": "ok"},
        },
    }
    proxy.restore()
    assert health().status_code == 200


def test_health_is_503_within_the_timeout_when_the_database_host_stops_answering(silent_alias, settings):
    settings.SESSIONS_APP = {"DATABASE_ALIAS": silent_alias, "HEALTH_TIMEOUT": 1}
    started = time.monotonic()
    response = health()
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    assert response.json()["checks"]["database"] == {"status": "unavailable", "reason": "timeout"}


def test_a_cache_that_is_down_is_reported_without_failing_the_check(settings):
    settings.CACHES = {
        **settings.CACHES,
        "broken": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
        },
    }
    settings.SESSIONS_APP = {"AUTH_CACHE_ALIAS": "broken", "HEALTH_TIMEOUT": 2}
    response = health()
    assert response.status_code == 200
    assert response.json()["checks"]["cache:broken"] == {"status": "unavailable", "reason": "error"}


def test_without_a_cache_in_use_no_cache_is_checked(settings):
    settings.SESSIONS_APP = {"AUTH_CACHE_TIMEOUT": 0}
    assert set(health().json()["checks"]) == {"database"}


# -- metrics ------------------------------------------------------------------------


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    wanted = ",".join(f'{key}="{value}"' for key, value in labels.items())
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(wanted)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_metrics_refuse_anonymous_callers_and_users_without_view(make_user, token_client):
    assert Client().get("/api/metrics/").status_code == 401
    client, _ = token_client(make_user("add"))
    assert client.get("/api/metrics/").status_code == 403


def test_metrics_count_real_calls_through_the_api_and_the_store(make_user, token_client):
    client, _ = token_client(make_user("view", "add", "change", "delete", username="prometheus"))

    def scrape() -> str:
        response = client.get("/api/metrics/")
        assert response.status_code == 200
        assert response["Content-Type"].startswith("text/plain")
        return response.content.decode()

    before = scrape()
    sid = SessionId.new()
    assert (
        client.put(f"/api/sessions/{sid}/", {"agent_id": 1, "started_at_ns": "1"}, format="json").status_code
        == 201
    )
    missing = client.get(f"/api/sessions/{SessionId.new()}/")
    assert missing.status_code == 404, (missing.json(), dict(missing.headers))

    async def through_the_store() -> None:
        async with DjangoSessionStore() as store:
            record = SessionRecord(SessionId.new(), 2, 2)
            await store.save(record)
            await store.load(record.session_id)
            await store.delete_many([record.session_id])

    asyncio.run(through_the_store())
    after = scrape()

    def moved(operation: str, outcome: str) -> float:
        name = "sessions_store_operations_total"
        labels = {"operation": operation, "outcome": outcome}
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert moved("save", "ok") == 2  # the PUT and the store's save
    assert moved("load", "not_found") == 1
    assert moved("load", "ok") == 1
    assert moved("delete_many", "ok") == 1
    assert sample(after, "sessions_store_operation_duration_seconds_count", operation="save") >= 2
    assert "sessions_store_pool_connections" in after


@pytest.mark.slow
def test_with_several_workers_the_metrics_add_up_across_them(tmp_path, make_user):
    import httpx
    from rest_framework.authtoken.models import Token

    from .servers import subprocess_database_url, uvicorn_server

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="prom")).key
    multiproc = tmp_path / "metrics"
    multiproc.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(multiproc)}
    headers = {"Authorization": f"Token {token}"}
    # A fresh connection for each call (none kept alive): the server spreads
    # them over both workers.
    no_keep_alive = httpx.Limits(max_keepalive_connections=0)
    with (
        uvicorn_server(subprocess_database_url(), workers=2, env=env) as base,
        httpx.Client(base_url=base, headers=headers, timeout=30, limits=no_keep_alive) as client,
    ):
        sid = SessionId.new()
        # Up to 200 calls, until each worker has counted some.
        made, per_worker = 0, [0.0]
        while made < 200 and not (len(per_worker) == 2 and all(per_worker)):
            for _ in range(20):
                assert client.put(
                    f"/api/sessions/{sid}/", json={"agent_id": made, "started_at_ns": "1"}
                ).is_success
                made += 1
            # Each worker's own file (every worker writes one at start-up, zeros included).
            per_worker = [saves_in(path, tmp_path) for path in sorted(multiproc.glob("counter_*.db"))]
        text = client.get("/api/metrics/").text
    assert len(per_worker) == 2 and all(count > 0 for count in per_worker), per_worker
    assert sum(per_worker) == made
    assert sample(text, "sessions_store_operations_total", operation="save", outcome="ok") == made


def saves_in(counter_file, scratch) -> float:
    """The ``save``/``ok`` count in one worker's multiprocess file, read alone."""
    from .servers import worker_count

    return worker_count(counter_file, scratch, "save")
