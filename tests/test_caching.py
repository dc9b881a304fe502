"""``sessions_app.caching``: one cache object per process where that is safe, Django's elsewhere."""

import contextvars
import os
import threading

import pytest
from django.core.cache import caches

from sessions_app import caching


def in_new_context(function):
    """``function()`` as a new request would run it under ASGI: in a context of its own."""
    return contextvars.Context().run(function)


def test_a_local_memory_cache_is_one_object_for_every_request_and_thread():
    seen = [in_new_context(lambda: caching.cache_for("default")) for _ in range(3)]
    thread = threading.Thread(target=lambda: seen.append(caching.cache_for("default")))
    thread.start()
    thread.join(5)
    assert len({id(cache) for cache in seen}) == 1
    # Django's own per-context objects differ from request to request ...
    assert in_new_context(lambda: caches["default"]) is not in_new_context(lambda: caches["default"])


def test_the_shared_object_sees_what_djangos_objects_store():
    caches["default"].set("caching-test", "written through Django", 30)
    assert caching.cache_for("default").get("caching-test") == "written through Django"
    caching.cache_for("default").set("caching-test", "written through the shared object", 30)
    seen_by_django = in_new_context(lambda: caches["default"].get("caching-test"))
    assert seen_by_django == "written through the shared object"


def test_a_cache_not_known_to_be_thread_safe_stays_djangos_per_context_object(settings):
    settings.CACHES = {
        **settings.CACHES,
        "network": {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": "cache_table"},
        "redis": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",
        },
    }
    assert caching.cache_for("network") is caches["network"]
    assert not caching.in_process(caching.cache_for("network"))
    # Redis: one object (one connection pool) for the process, but not in-process.
    assert in_new_context(lambda: caching.cache_for("redis")) is caching.cache_for("redis")
    assert not caching.in_process(caching.cache_for("redis"))
    assert caching.in_process(caches["default"])
    from django.core.cache import cache as default_proxy  # what DRF's throttles hold

    assert caching.in_process(default_proxy)


def test_a_change_of_caches_gives_a_new_object(settings):
    before = caching.cache_for("default")
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}
    after = caching.cache_for("default")
    assert after is not before
    assert type(after).__name__ == "DummyCache"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_can_take_the_lock_another_thread_held_at_fork():
    """The lock is new in the child: a thread holding it at fork() does not hang the child."""
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with caching._shared_lock:
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # the child: only this thread exists here
            code = 0 if caching._shared_lock.acquire(timeout=2) else 1
            os._exit(code)
        _, status = os.waitpid(pid, 0)
    finally:
        release.set()
        holder.join(5)
    assert os.waitstatus_to_exitcode(status) == 0
