"""Which caches answer from this process's memory, and one shared handle to each.

Django's ``caches[alias]`` keeps one cache object per thread and, under
ASGI, per request context: every request served on the event loop builds a
new ``LocMemCache`` object the first time it touches a cache (about 10 us
on the development machine). The in-process backends need no such care:
every ``LocMemCache`` object of one ``LOCATION`` shares one dictionary and
one lock, and ``DummyCache`` holds nothing, so ``cache_for`` hands out one
object per alias for the process. Every other backend (Redis, Memcached,
the database) is Django's per-context object, as always.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from django.core.cache import BaseCache, caches
from django.core.cache.backends.dummy import DummyCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.signals import setting_changed
from django.utils.connection import ConnectionProxy

IN_PROCESS_CACHES: tuple[type[BaseCache], ...] = (LocMemCache, DummyCache)

# alias -> the process's shared object, or None: "not in-process, use caches[alias]".
_shared: dict[str, BaseCache | None] = {}
_shared_lock = threading.Lock()


def in_process(cache: object) -> bool:
    """Whether a cache answers from this process's memory, with no I/O."""
    alias = alias_of(cache)
    if alias is not None:
        cache = cache_for(alias)
    return isinstance(cache, IN_PROCESS_CACHES)


def cache_for(alias: str) -> BaseCache:
    """The cache of ``alias``: one object for the process if it is in-process, else ``caches[alias]``."""
    try:
        shared = _shared[alias]
    except KeyError:
        with _shared_lock:
            if alias not in _shared:
                candidate = caches.create_connection(alias)
                _shared[alias] = candidate if isinstance(candidate, IN_PROCESS_CACHES) else None
            shared = _shared[alias]
    return caches[alias] if shared is None else shared


def alias_of(cache: object) -> str | None:
    """The alias behind a proxy such as ``django.core.cache.cache`` (DRF's throttles hold it), else None."""
    return cache._alias if isinstance(cache, ConnectionProxy) else None


def _forget(*, setting: str, **kwargs: Any) -> None:
    if setting == "CACHES":
        with _shared_lock:
            _shared.clear()


def _after_fork_in_child() -> None:
    # A lock another thread held at fork() stays held in the child forever.
    global _shared_lock
    _shared_lock = threading.Lock()


setting_changed.connect(_forget)
os.register_at_fork(after_in_child=_after_fork_in_child)
