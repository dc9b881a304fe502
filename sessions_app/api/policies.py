"""Running DRF's authentication, throttle and permission checks from the event loop.

DRF's policies are synchronous code. Run in a worker thread, each costs a
thread hop per request; run in the loop, one that waits on the network
would stall every other request. The async detail view runs them in the
loop only when all of them answer from this process's memory or the
database:

- every policy object is known to do no other I/O: DRF's own classes,
  this app's, or a class that sets ``run_in_event_loop = True``;
- the caches they consult are in-process (Django's ``LocMemCache`` or
  ``DummyCache``): the auth cache (``SESSIONS_APP["AUTH_CACHE_ALIAS"]``)
  and each throttle's ``cache`` (DRF's throttles use ``default``).

A check that then reaches for the database (a cache miss, the session of
``SessionAuthentication``, an uncached lookup) is stopped by Django's
async-safety guard (``SynchronousOnlyOperation``) before any query runs,
and runs again from its start in a worker thread; DRF's checks and this
app's change nothing before their first query. Otherwise (Redis or
Memcached behind them, or a policy class of unknown habits) every check
runs in a worker thread, as under a synchronous view.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from asgiref.sync import sync_to_async
from django.core.exceptions import SynchronousOnlyOperation
from rest_framework.request import Request

from ..caching import cache_for, in_process
from ..conf import app_settings

LOOP_SAFE_PACKAGES = ("rest_framework", "sessions_app")


def loop_safe(policy: object) -> bool:
    """Whether a policy object does no I/O but the database and its cache."""
    declared = getattr(policy, "run_in_event_loop", None)
    if declared is not None:
        return bool(declared)
    return type(policy).__module__.partition(".")[0] in LOOP_SAFE_PACKAGES


def can_run_in_loop(policies: Iterable[object]) -> bool:
    """Whether every policy is loop-safe and every cache in play in-process."""
    if not in_process(cache_for(app_settings.AUTH_CACHE_ALIAS)):
        return False
    return all(
        loop_safe(policy) and (not hasattr(policy, "cache") or in_process(policy.cache))
        for policy in policies
    )


async def run_policy(check: Callable[[Request], None], request: Request, *, in_loop: bool) -> None:
    """``check(request)``: in the loop if ``in_loop`` and it needs no query, else in a worker thread."""
    if in_loop:
        try:
            check(request)
            return
        except SynchronousOnlyOperation:
            pass  # it needs the database: from its start, in a thread
    await sync_to_async(check)(request)
