"""Django's caches as this app uses them: one object per process, and outages reported once.

One object per process. Django's ``caches[alias]`` keeps one cache object
per thread and, under ASGI, per request context, so every request served
on the event loop builds a new one. For a ``LocMemCache`` that costs about
10 us; for a ``RedisCache`` it costs a new connection pool, so a busy
worker opened about one Redis connection per request and kept hundreds.
``cache_for(alias)`` hands out one object per process for the backends
that are safe to share between threads: the in-process ones (every
``LocMemCache`` of a ``LOCATION`` shares one dictionary and lock,
``DummyCache`` holds nothing) and ``RedisCache`` (redis-py's connection
pool is thread-safe, bounded by ``OPTIONS["max_connections"]``, and resets
itself in a forked child). Any other backend (Memcached, the database) is
Django's per-context object, as always.

Outages. A cache that fails is reported once when it starts failing (a
WARNING, and ``sessions_cache_outages_total{alias}``) and once when it
answers again (a WARNING with how long it was down), not once per request.
``tolerant(alias)`` is a cache that never raises: a failed read is a miss
and a failed write is dropped (DRF's throttles then let requests through
until the cache is back, rather than answering 500).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

import prometheus_client
from django.core.cache import BaseCache, caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.core.signals import setting_changed
from django.utils.connection import ConnectionProxy

logger = logging.getLogger("sessions_app.cache")

IN_PROCESS_CACHES: tuple[type[BaseCache], ...] = (LocMemCache, DummyCache)
SHARED_CACHES: tuple[type[BaseCache], ...] = (*IN_PROCESS_CACHES, RedisCache)

OUTAGES = prometheus_client.Counter(
    "sessions_cache_outages", "Times a cache started failing (each outage once), by alias.", ["alias"]
)

# alias -> the process's shared object, or None: "not shareable, use caches[alias]".
_shared: dict[str, BaseCache | None] = {}
_shared_lock = threading.Lock()
# alias -> when its current outage started (time.monotonic()).
_down: dict[str, float] = {}


def in_process(cache: object) -> bool:
    """Whether a cache answers from this process's memory, with no I/O."""
    alias = alias_of(cache)
    if alias is not None:
        cache = cache_for(alias)
    return isinstance(cache, IN_PROCESS_CACHES)


def cache_for(alias: str) -> BaseCache:
    """The cache of ``alias``: one object for the process where that is safe, else ``caches[alias]``."""
    try:
        shared = _shared[alias]
    except KeyError:
        with _shared_lock:
            if alias not in _shared:
                candidate = _create(alias)
                _shared[alias] = candidate if isinstance(candidate, SHARED_CACHES) else None
            shared = _shared[alias]
    return caches[alias] if shared is None else shared


class AppKeysLocMemCache(LocMemCache):
    """A ``LocMemCache`` that takes this app's keys as they are.

    Django checks every key against memcached's rules (a loop over its
    characters) on each call, the larger part of a ``get`` here; the keys
    this app makes are short and plain, and for an in-process cache the
    check only ever warns. Same ``LOCATION``, same dictionary and lock as
    Django's own object for the alias.
    """

    def validate_key(self, key: str) -> None:
        pass


def _create(alias: str) -> BaseCache:
    """``caches.create_connection(alias)``; a ``LocMemCache`` as an ``AppKeysLocMemCache``."""
    candidate = caches.create_connection(alias)
    if type(candidate) is LocMemCache:
        params = dict(caches.settings[alias])
        params.pop("BACKEND")
        return AppKeysLocMemCache(params.pop("LOCATION", ""), params)
    return candidate


def alias_of(cache: object) -> str | None:
    """The alias behind ``django.core.cache.cache`` (DRF's throttles hold it) or a ``TolerantCache``."""
    if isinstance(cache, ConnectionProxy):
        alias: str = cache._alias
        return alias
    if isinstance(cache, TolerantCache):
        return cache.alias
    return None


def failed(alias: str, exc: BaseException) -> None:
    """Note that ``alias`` failed; the first failure of an outage is logged and counted."""
    if alias in _down:
        return
    _down[alias] = time.monotonic()
    OUTAGES.labels(alias).inc()
    logger.warning(
        "cache %r is unavailable (%s: %s); going on without it until it answers again",
        alias,
        type(exc).__name__,
        exc,
    )


def answered(alias: str) -> None:
    """Note that ``alias`` answered; the end of an outage is logged."""
    if alias in _down:
        started = _down.pop(alias, None)
        if started is not None:
            logger.warning("cache %r answers again after %.1f s", alias, time.monotonic() - started)


class TolerantCache:
    """The cache of ``alias`` for callers that can do without it: never raises, reports outages."""

    def __init__(self, alias: str) -> None:
        self.alias = alias

    def get(self, key: str, default: Any = None) -> Any:
        return self._quietly(default, "get", key, default)

    def set(self, key: str, value: Any, timeout: float | object | None = DEFAULT_TIMEOUT) -> bool:
        return self._quietly(False, "set", key, value, timeout) is not False

    def add(self, key: str, value: Any, timeout: float | object | None = DEFAULT_TIMEOUT) -> bool:
        return bool(self._quietly(False, "add", key, value, timeout))

    def incr(self, key: str, delta: int = 1) -> int | None:
        """The backend's own ``incr`` (atomic on Redis and in memory); ``None`` if it failed."""
        value = self._quietly(None, "incr", key, delta)
        return None if value is None else int(value)

    def _quietly(self, default: Any, method: str, *args: Any) -> Any:
        """``cache.<method>(*args)``, or ``default`` if the cache failed (an outage: logged once)."""
        try:
            value = getattr(cache_for(self.alias), method)(*args)
        except ValueError as exc:
            if method != "incr":  # incr: the key expired in between, and the count starts again
                failed(self.alias, exc)
            return default
        except Exception as exc:
            failed(self.alias, exc)
            return default
        answered(self.alias)
        return value


def tolerant(alias: str) -> TolerantCache:
    return TolerantCache(alias)


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        with _shared_lock:
            _shared.clear()
        _down.clear()


def _after_fork_in_child() -> None:
    # A lock another thread held at fork() stays held in the child forever.
    global _shared_lock
    _shared_lock = threading.Lock()


setting_changed.connect(_forget)
os.register_at_fork(after_in_child=_after_fork_in_child)
