"""``CachedSessionStore``: the contract over a cache, on locmem and on Redis, and without a cache."""

import asyncio
import logging
import random
import threading

import pytest

from sessions_app.storage import (
    CachedSessionStore,
    DjangoSessionStore,
    InMemorySessionStore,
    NotFound,
    SessionId,
    SessionRecord,
    assert_session_store_conformance,
)
from sessions_app.storage.cached import STALE, TOMBSTONE

from .conftest import missing


@pytest.fixture(autouse=True)
def caches_under_test(settings, request):
    redis = (
        f"{request.getfixturevalue('redis_server')}/15" if needs_redis(request) else "redis://127.0.0.1:1/0"
    )
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "sessions-tests"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": redis,  # this test process' own redis-server (tests/conftest.py)
            "KEY_PREFIX": "sessions-app-tests",
        },
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
        },
    }
    from django.core.cache import caches

    yield
    for alias in ("default", "redis") if needs_redis(request) else ("default",):
        caches[alias].clear()


def needs_redis(request: pytest.FixtureRequest) -> bool:
    """The test runs on the Redis cache (its ``cache_alias`` is ``redis``, or it asks for the server)."""
    callspec = getattr(request.node, "callspec", None)
    return (callspec is not None and callspec.params.get("cache_alias") == "redis") or (
        "redis_server" in request.fixturenames
    )


@pytest.fixture(params=["locmem", "redis"])
def cache_alias(request):
    return "redis" if request.param == "redis" else "default"


@pytest.fixture(params=["memory", "django"])
def backing(request, transactional_db):
    return DjangoSessionStore() if request.param == "django" else InMemorySessionStore()


async def test_conformance(backing, cache_alias):
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    await assert_session_store_conformance(store, SessionRecord(SessionId.new(), 3, 2**64 - 1))


async def test_loads_are_served_from_the_cache_after_the_first(cache_alias):
    backing = InMemorySessionStore()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    record = SessionRecord(SessionId.new(), 1, 2)
    await backing.save(record)  # behind the cache's back
    assert await store.load(record.session_id) == record
    await backing.delete(record.session_id)
    assert await store.load(record.session_id) == record  # the cached copy


async def test_a_deleted_session_is_never_served(backing, cache_alias):
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    record = SessionRecord(SessionId.new(), 1, 2)
    await store.save(record)
    await store.load(record.session_id)  # cached
    await store.delete(record.session_id)
    with pytest.raises(NotFound):
        await store.load(record.session_id)
    assert await store.load_many([record.session_id]) == {}
    from django.core.cache import caches

    assert await caches[cache_alias].aget(store.key(record.session_id)) == TOMBSTONE


class PausingStore(InMemorySessionStore):
    """Holds ``load`` after reading, until released: the window where a delete can slip in."""

    def __init__(self) -> None:
        super().__init__()
        self.read_done = asyncio.Event()
        self.release = asyncio.Event()

    async def load(self, session_id):
        record = await super().load(session_id)
        self.read_done.set()
        await self.release.wait()
        return record


async def test_a_load_racing_a_delete_cannot_put_the_record_back(cache_alias):
    backing = PausingStore()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    record = SessionRecord(SessionId.new(), 1, 2)
    await backing.save(record)
    slow_load = asyncio.create_task(store.load(record.session_id))
    await backing.read_done.wait()  # the load has read the row...
    await store.delete(record.session_id)  # ...the delete lands...
    backing.release.set()
    assert await slow_load == record  # ...the load answers what it read,
    with pytest.raises(NotFound):  # but the cache does not keep it.
        await store.load(record.session_id)


async def test_save_overwrites_the_cached_value(cache_alias):
    store = CachedSessionStore(InMemorySessionStore(), cache_alias=cache_alias, timeout=60)
    sid = SessionId.new()
    await store.save(SessionRecord(sid, 1, 1))
    await store.load(sid)
    await store.save(SessionRecord(sid, 2, 2))
    assert await store.load(sid) == SessionRecord(sid, 2, 2)


async def test_batches_go_through_the_cache(cache_alias):
    backing = InMemorySessionStore()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    records = [SessionRecord(SessionId.new(), n, n) for n in range(50)]
    await store.save_many(records)
    await backing.delete_many([r.session_id for r in records[:10]])  # behind its back
    assert await store.load_many([r.session_id for r in records]) == {r.session_id: r for r in records}
    await store.delete_many([r.session_id for r in records[10:20]])
    left = await store.load_many([r.session_id for r in records])
    assert set(left) == {r.session_id for r in records[:10] + records[20:]}


async def test_a_value_it_cannot_read_is_a_miss(cache_alias):
    from django.core.cache import caches

    backing = InMemorySessionStore()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    record = SessionRecord(SessionId.new(), 1, 2)
    await backing.save(record)
    await caches[cache_alias].aset(store.key(record.session_id), ("junk", -1))
    assert await store.load(record.session_id) == record
    assert await caches[cache_alias].aget(store.key(record.session_id)) == ("junk", -1)  # add() kept it


async def test_with_the_cache_down_it_falls_back_to_the_backing_store_and_warns_once(caplog):
    from sessions_app import caching

    caching._down.pop("down", None)
    store = CachedSessionStore(InMemorySessionStore(), cache_alias="down", timeout=60)
    record = SessionRecord(SessionId.new(), 1, 2)
    with caplog.at_level(logging.WARNING, logger="sessions_app.cache"):
        await assert_session_store_conformance(store, record)
        await store.save_many([record])
        assert await store.load_many([record.session_id]) == {record.session_id: record}
    # A dozen failed cache calls, one outage: one warning.
    outage = [message for message in caplog.messages if "cache 'down' is unavailable" in message]
    assert len(outage) == 1, caplog.messages


@pytest.fixture
def private_redis(tmp_path, settings):
    """A Redis server of this test's own on a free loopback port, to misconfigure at will."""
    import shutil
    import subprocess
    import time

    import redis

    from .servers import free_port

    executable = shutil.which("redis-server")
    if executable is None:
        missing("redis-server", "not installed; scripts/install-system-packages.sh installs it")
    port = free_port()
    process = subprocess.Popen(
        [executable, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    admin = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    deadline = time.monotonic() + 10
    while True:
        try:
            admin.ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    admin.acl_setuser("reader", enabled=True, nopass=True, keys=["*"], commands=["+get", "+mget", "+ping"])
    location = f"redis://127.0.0.1:{port}/0"
    settings.CACHES = {
        **settings.CACHES,
        "private": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": location},
        "private_readonly": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://reader:any@127.0.0.1:{port}/0",
        },
    }
    yield admin
    admin.close()
    process.terminate()
    process.wait(10)


async def test_a_cache_that_refuses_the_tombstone_drops_the_record_instead(private_redis, caplog):
    """Redis out of memory refuses writes but not deletions: the deleted record must not be served."""
    store = CachedSessionStore(InMemorySessionStore(), cache_alias="private", timeout=60)
    record = SessionRecord(SessionId.new(), 1, 1)
    await store.save(record)
    assert await store.load(record.session_id) == record  # cached now
    private_redis.config_set("maxmemory-policy", "noeviction")
    private_redis.config_set("maxmemory", 1)  # every write is refused from here on
    with caplog.at_level(logging.WARNING):
        await store.delete(record.session_id)
    assert any("is unavailable" in message and "OutOfMemory" in message for message in caplog.messages)
    private_redis.config_set("maxmemory", 0)
    with pytest.raises(NotFound):
        await store.load(record.session_id)


async def test_a_cache_that_refuses_tombstone_and_deletion_is_logged_at_error_with_the_id(
    private_redis, caplog
):
    """The one case the README names: the old record may be served until the timeout; an operator is told."""
    writer = CachedSessionStore(InMemorySessionStore(), cache_alias="private", timeout=60)
    record = SessionRecord(SessionId.new(), 1, 1)
    await writer.save(record)
    readonly = CachedSessionStore(writer.backing_store, cache_alias="private_readonly", timeout=60)
    with caplog.at_level(logging.WARNING, logger="sessions_app.storage"):
        await readonly.delete(record.session_id)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(record.session_id) in errors[0] and "60" in errors[0]
    assert await readonly.load(record.session_id) == record  # served from the cache, as documented


async def test_a_save_the_cache_refuses_drops_the_older_cached_record(private_redis, caplog):
    """Redis out of memory refuses the new record: the old one must not be served in its place."""
    store = CachedSessionStore(InMemorySessionStore(), cache_alias="private", timeout=60)
    sid = SessionId.new()
    await store.save(SessionRecord(sid, 1, 1))
    assert await store.load(sid) == SessionRecord(sid, 1, 1)  # cached now
    private_redis.config_set("maxmemory-policy", "noeviction")
    private_redis.config_set("maxmemory", 1)  # every write is refused from here on
    with caplog.at_level(logging.WARNING):
        await store.save(SessionRecord(sid, 2, 2))  # the backing store takes it
    assert any("is unavailable" in message and "OutOfMemory" in message for message in caplog.messages)
    private_redis.config_set("maxmemory", 0)
    assert await store.load(sid) == SessionRecord(sid, 2, 2)


class OrderedSaves(InMemorySessionStore):
    """Lets the test decide when each save reaches the backing store and when it returns."""

    def __init__(self) -> None:
        super().__init__()
        self.written: dict[int, asyncio.Event] = {}
        self.may_return: dict[int, asyncio.Event] = {}

    async def save(self, record):
        await super().save(record)
        self.written.setdefault(record.agent_id, asyncio.Event()).set()
        await self.may_return.setdefault(record.agent_id, asyncio.Event()).wait()


async def test_two_saves_caching_in_the_opposite_order_of_their_writes_leave_no_older_record(cache_alias):
    """A writes, B writes (B is what the backing store holds), B caches, then A caches: A's is older."""
    backing = OrderedSaves()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=60)
    sid = SessionId.new()
    a = asyncio.create_task(store.save(SessionRecord(sid, 1, 1)))
    await backing.written.setdefault(1, asyncio.Event()).wait()
    b = asyncio.create_task(store.save(SessionRecord(sid, 2, 2)))
    await backing.written.setdefault(2, asyncio.Event()).wait()
    backing.may_return.setdefault(2, asyncio.Event()).set()
    await b  # B cached its record
    backing.may_return.setdefault(1, asyncio.Event()).set()
    await a  # A cached the older one after it
    assert await backing.load(sid) == SessionRecord(sid, 2, 2)
    assert await store.load(sid) == SessionRecord(sid, 2, 2)


class SharedSlowStore(InMemorySessionStore):
    """One backing store for several threads' event loops; each save waits a random while around its write."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.rows: dict[SessionId, SessionRecord] = {}

    async def save(self, record):
        await asyncio.sleep(random.random() / 1000)
        with self.lock:
            self.rows[record.session_id] = record
        await asyncio.sleep(random.random() / 1000)

    async def load(self, session_id):
        with self.lock:
            if session_id not in self.rows:
                raise NotFound(str(session_id))
            return self.rows[session_id]


def test_concurrent_saves_from_several_threads_never_leave_an_older_record_cached(redis_server):
    """Real concurrency against a real Redis: four threads, each its own event loop, saving the same ids."""
    backing = SharedSlowStore()
    ids = [SessionId.new() for _ in range(20)]
    rounds = 15

    def worker(number: int, barrier: threading.Barrier) -> None:
        async def run() -> None:
            store = CachedSessionStore(backing, cache_alias="redis", timeout=60)
            try:
                for round_ in range(rounds):
                    await asyncio.to_thread(barrier.wait)
                    await asyncio.gather(
                        *(store.save(SessionRecord(sid, number, round_)) for sid in ids),
                        *(store.save(SessionRecord(sid, number + 10, round_)) for sid in ids),
                    )
                    await asyncio.to_thread(barrier.wait)  # every save of the round is done: check
                    if number == 0:
                        for sid in ids:
                            cached = await store.cache.aget(store.key(sid))
                            assert cached in (None, STALE) or cached == (
                                backing.rows[sid].agent_id,
                                round_,
                            ), f"round {round_}: cached {cached}, backing store: {backing.rows[sid]}"
                    await asyncio.to_thread(barrier.wait)
            finally:
                await store.aclose()

        asyncio.run(run())

    barrier = threading.Barrier(4, timeout=60)
    errors: list[BaseException] = []

    def guarded(number: int) -> None:
        try:
            worker(number, barrier)
        except BaseException as exc:
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=guarded, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(isinstance(e, AssertionError) for e in errors), errors
    assert not errors, errors


class GatedStore(InMemorySessionStore):
    """A backing store whose loads wait, after reading, until the test lets them go on."""

    def __init__(self) -> None:
        super().__init__()
        self.read = asyncio.Event()
        self.go = asyncio.Event()
        self.gated = True

    async def load(self, session_id):
        record = await super().load(session_id)
        if self.gated:
            self.read.set()
            await asyncio.wait_for(self.go.wait(), 10)
        return record


async def test_a_load_that_read_before_overlapping_saves_cannot_cache_its_older_value(cache_alias):
    backing = GatedStore()
    store = CachedSessionStore(backing, cache_alias=cache_alias, timeout=300)
    sid = SessionId.new()
    await backing.save(SessionRecord(sid, 1, 1))  # in the backing store, not cached
    loader = asyncio.create_task(store.load(sid))  # a miss: reads (1, 1), then waits
    await asyncio.wait_for(backing.read.wait(), 10)
    # Two overlapping saves: one of them sees the other's count and takes the record out of service.
    await asyncio.gather(store.save(SessionRecord(sid, 2, 2)), store.save(SessionRecord(sid, 3, 3)))
    backing.go.set()
    assert await loader == SessionRecord(sid, 1, 1)  # what it read, before the saves
    backing.gated = False
    assert await store.load(sid) == SessionRecord(sid, 3, 3)  # not the load's older value
    assert await store.load_many([sid]) == {sid: SessionRecord(sid, 3, 3)}
