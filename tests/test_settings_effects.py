"""Each ``SESSIONS_APP`` key changes what it says it changes, and the sync facade keeps the contract."""

import pytest
from rest_framework.test import APIClient

from sessions_app.models import ExecutionSession
from sessions_app.storage import (
    BackendError,
    CachedSessionStore,
    DjangoSessionStore,
    InMemorySessionStore,
    NotFound,
    SessionId,
    SessionRecord,
    SyncDjangoSessionStore,
)


def test_native_async_false_selects_the_sync_to_async_path(settings):
    settings.SESSIONS_APP = {"NATIVE_ASYNC": False}
    assert DjangoSessionStore().path_name == "sync_to_async"


@pytest.mark.django_db(transaction=True)
async def test_pool_size_caps_connections_and_pool_timeout_bounds_the_wait(settings):
    """POOL_SIZE busy connections at most; the next caller waits POOL_TIMEOUT, then BackendError."""
    import asyncio
    import time

    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("the pool exists on PostgreSQL only")
    settings.SESSIONS_APP = {"POOL_SIZE": 3, "POOL_TIMEOUT": 0.5}
    store = DjangoSessionStore()
    assert store.path_name == "PostgresPath"
    # The sleepers hold every connection far longer than the bounds below,
    # so no timing of a busy machine decides the outcome.
    sleepers = [asyncio.create_task(store.path.execute(("SELECT pg_sleep(60)", ()))) for _ in range(4)]

    for _ in range(3000):  # until the pool has lent every connection (at most 30 s)
        pool = store.path.pool_for_running_loop()
        if pool is not None and pool.in_use == 3:
            break
        await asyncio.sleep(0.01)
    assert pool is not None
    assert (pool.open_count, pool.in_use) == (3, 3)  # the fourth sleeper waits: POOL_SIZE caps them
    started = time.monotonic()
    with pytest.raises(BackendError, match="stayed busy"):
        # Without the bound the load would wait for a sleeper: a TimeoutError here, not a BackendError.
        await asyncio.wait_for(store.load(SessionId.new()), 30)
    assert time.monotonic() - started >= 0.45  # it waited POOL_TIMEOUT first (timers never fire early)
    assert (pool.open_count, pool.in_use) == (3, 3)
    for sleeper in sleepers:
        sleeper.cancel()
    await asyncio.gather(*sleepers, return_exceptions=True)


@pytest.mark.parametrize("cache_timeout", [0, 300])
async def test_cache_alias_and_timeout_decide_where_and_how_long_records_are_cached(settings, cache_timeout):
    """CACHE_ALIAS picks the cache that holds records; CACHE_TIMEOUT how long a load may serve one."""
    from django.core.cache import caches

    settings.CACHES = {
        **settings.CACHES,
        "records": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "records"},
    }
    settings.SESSIONS_APP = {"CACHE_ALIAS": "records", "CACHE_TIMEOUT": cache_timeout}
    backing = InMemorySessionStore()
    store = CachedSessionStore(backing)
    record = SessionRecord(SessionId.new(), 1, 1)
    await store.save(record)
    changed = SessionRecord(record.session_id, 2, 2)
    await backing.save(changed)  # a write that bypasses the cache
    # Timeout 0: nothing is kept, so the load sees the backing store's value;
    # 300: the cached value is served.
    assert await store.load(record.session_id) == (changed if cache_timeout == 0 else record)
    assert (caches["records"].get(store.key(record.session_id)) is not None) is (cache_timeout > 0)
    assert caches["default"].get(store.key(record.session_id)) is None


@pytest.mark.django_db
def test_page_size_and_max_page_size_shape_the_list(settings, api):
    ExecutionSession.objects.bulk_create(
        ExecutionSession(session_id=SessionId.new(), agent_id=1, started_at_ns=n) for n in range(12)
    )
    settings.SESSIONS_APP = {"PAGE_SIZE": 5, "MAX_PAGE_SIZE": 8}
    assert len(api.get("/api/sessions/").json()["results"]) == 5
    assert len(api.get("/api/sessions/", {"page_size": 100}).json()["results"]) == 8


@pytest.mark.django_db
def test_permission_classes_replace_the_model_permissions(settings):
    settings.SESSIONS_APP = {
        "PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
        "THROTTLE_CLASSES": [],
    }
    assert APIClient().get("/api/sessions/").status_code == 200


@pytest.mark.django_db
def test_empty_throttle_classes_turn_throttling_off(settings, monkeypatch, make_user):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": "1/minute", "user": "1/minute"})
    cache.clear()
    settings.SESSIONS_APP = {"THROTTLE_CLASSES": []}
    client = APIClient()
    client.force_authenticate(make_user("view"))
    assert [client.get("/api/sessions/").status_code for _ in range(3)] == [200, 200, 200]
    cache.clear()


@pytest.mark.django_db
def test_the_sync_facade_keeps_the_contract():
    store = SyncDjangoSessionStore()
    record = SessionRecord(SessionId.new(), 2**63 - 1, 2**64 - 1)
    store.save(record)
    assert store.load(record.session_id) == record
    store.save(SessionRecord(record.session_id, 0, 0))
    assert store.load(record.session_id) == SessionRecord(record.session_id, 0, 0)
    store.delete(record.session_id)
    with pytest.raises(NotFound):
        store.load(record.session_id)
    store.delete(record.session_id)
    assert store.upsert(record) is True
    assert store.upsert(record) is False
    with pytest.raises(TypeError):
        store.save("not a record")


def test_the_sync_facade_raises_backend_error_on_a_missing_table(db):
    from sessions_app.models import AbstractExecutionSession

    class Elsewhere(AbstractExecutionSession):
        class Meta:
            app_label = "sessions_app"
            db_table = "sessions_nowhere"
            managed = False

    with pytest.raises(BackendError):
        SyncDjangoSessionStore(model=Elsewhere).load(SessionId.new())
