"""Slowing down credential guessing: failed authentications counted per client address.

DRF's throttles run after authentication, so a client trying tokens or
keys is refused (401) before any throttle counts it, and each guess costs
a database query. Here the API's authentication classes
(``CachedTokenAuthentication``, ``AgentKeyAuthentication``) count each
failed authentication per client address, in every view that uses them
(the sessions API, the metrics, the schema). An address that failed
``SESSIONS_APP["AUTH_FAILURE_RATE"]`` times in the current window (a
minute for ``"20/min"``) gets 429 with ``Retry-After`` for every request
that carries a credential until the window ends, before the credential is
looked at: no database query, and even a correct key is refused.

Counts are one integer per address and window, added to atomically
(``cache.incr``), so guesses sent at once are each counted. The address is
DRF's ``get_ident``: ``REMOTE_ADDR``, or the ``X-Forwarded-For`` entry that
``REST_FRAMEWORK["NUM_PROXIES"]`` proxies vouch for; it is hashed into the
cache key (any length, any characters). The counts live in the cache DRF's
throttles use (``default``); while that cache is down they are not kept,
and no address is refused (the outage is logged once).
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Iterable
from typing import Any

from django.core.cache import cache as default_cache
from rest_framework import exceptions
from rest_framework import throttling as drf_throttling
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ..caching import TolerantCache, alias_of, tolerant
from ..conf import app_settings

KEY_FORMAT = "sessions_app:auth-failures:{window}:{ident}"
#: Seconds a throttle kept for many requests uses a client's previous-window count before reading it again.
PREVIOUS_COUNT_FOR = 1.0


class AuthFailureThrottle(BaseThrottle):
    """Failed authentications per client address and window: ``wait_for`` and ``record_failure``."""

    timer = staticmethod(time.time)

    def __init__(self) -> None:
        self.cache: TolerantCache = tolerant(alias_of(default_cache) or "default")
        self.limit, self.window = parse_rate(app_settings.AUTH_FAILURE_RATE)

    def allow_request(self, request: Request, view: Any) -> bool:
        return self.wait_for(request) is None

    def wait_for(self, request: Request) -> float | None:
        """Seconds this address stays refused, or ``None`` if it may try."""
        if not self.limit:
            return None
        now = self.timer()
        count = self.cache.get(self._key(request, now), 0)
        if not isinstance(count, int) or count < self.limit:
            return None
        return max(self.window - now % self.window, 0.001)

    def record_failure(self, request: Request) -> None:
        if self.limit:
            key = self._key(request, self.timer())
            # Twice the window: the count outlives its window whatever the clocks say.
            self.cache.add(key, 0, self.window * 2)
            self.cache.incr(key)

    def _key(self, request: Request, now: float) -> str:
        ident = str(self.get_ident(request))
        hashed = _hashed_address(ident) if len(ident) <= 64 else _hashed(ident)  # kept: addresses only
        return KEY_FORMAT.format(window=int(now // self.window), ident=hashed)


def _hashed(ident: str) -> str:
    """The address as it goes into a key: any length, any characters in, 32 hex digits out."""
    return hashlib.sha256(ident.encode()).hexdigest()[:32]


_hashed_address = functools.lru_cache(maxsize=1024)(_hashed)


def parse_rate(rate: str | None) -> tuple[int, int]:
    """DRF's rate format: ``"20/min"`` -> (20, 60); ``None`` -> (0, 0), no limit."""
    if not rate:
        return 0, 0
    count, period = rate.split("/")
    return int(count), {"s": 1, "m": 60, "h": 3600, "d": 86400}[period[0]]


def throttles(classes: Iterable[type[BaseThrottle]]) -> list[BaseThrottle]:
    """One instance of each throttle class, as DRF's ``get_throttles``, each on a cache that never raises.

    DRF's throttles hold ``django.core.cache.cache``, a new cache object per
    request context, which raises when the cache is down: here they get the
    process's shared object of the same alias, and a cache outage lets
    requests through (logged once) instead of a 500.
    """
    made = [throttle() for throttle in classes]
    for throttle in made:
        alias = alias_of(getattr(throttle, "cache", None))
        if alias is not None:
            throttle.cache = tolerant(alias)  # type: ignore[attr-defined]
    return made


class CountsFailures:
    """A mixin for DRF authentication classes: refuse an address that failed too often, count failures.

    ``authenticate_counted(request, authenticate)`` runs ``authenticate`` (the
    class's own lookup) only if the address is not refused; an
    ``AuthenticationFailed`` it raises is counted. DRF then marks the request
    unauthenticated and answers the 429 or the 401.
    """

    _auth_failures: AuthFailureThrottle | None = None

    @property
    def auth_failures(self) -> AuthFailureThrottle:
        # One per authentication object (DRF makes them per request): settings changes apply.
        if self._auth_failures is None:
            self._auth_failures = AuthFailureThrottle()
        return self._auth_failures

    @property
    def cache(self) -> TolerantCache:
        """The cache this class reads on every request (the event-loop decision looks at it)."""
        return self.auth_failures.cache

    def refuse_if_blocked(self, request: Request) -> None:
        wait = self.auth_failures.wait_for(request)
        if wait is not None:
            raise exceptions.Throttled(wait)

    def count_failure(self, request: Request) -> None:
        self.auth_failures.record_failure(request)


class SlidingWindowMixin:
    """DRF's rate throttles at a constant cost per request: two counters per client, not every request's time.

    DRF's ``SimpleRateThrottle`` keeps the time of each request in the
    window as a list in the cache, read, changed and written back whole on
    every request: at the host project's ``100000/minute`` up to 100,000
    floats pickled twice per request (``benchmarks/throttle_bench.py``), and
    two requests at once can each write back a list without the other's
    time. Here a client has one counter per window; a request is counted
    first (``cache.incr``, atomic) and takes its count back if refused, so
    requests at once get distinct counts and no more than the rate pass.

    The rate is checked over a sliding window estimated from the current
    window's count and the previous one's, weighted by the share of the
    previous window the sliding window still covers (the estimate many API
    gateways use). It is exact for requests spread evenly; a burst at the
    end of one window followed by a steady stream early in the next can
    pass up to twice the rate in one sliding window, where DRF's list
    would refuse. The rates, scopes and cache idents are DRF's; ``wait()``
    is the time until the estimate falls below the rate.
    """

    rate: str | None
    num_requests: int
    duration: int
    cache: Any
    timer: Any
    get_cache_key: Any  # DRF's class beside this mixin gives it
    _counts: tuple[int, int, float] = (0, 0, 0.0)
    _previous: tuple[int, dict[str, tuple[int, float]]] | None = None  # window, key -> (count, read at)

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None:
            return True
        window, offset = divmod(self.timer(), self.duration)
        current_key = f"{key}:{int(window)}"
        current = _incr(self.cache, current_key)
        if current is None:  # not there yet (or the cache is down: logged once, and let through)
            # Twice the window: the count is still there as the next window's "previous".
            self.cache.add(current_key, 0, self.duration * 2)
            current = _incr(self.cache, current_key)
            if current is None:
                return True
        previous = self._previous_count(int(window), f"{key}:{int(window) - 1}")
        # Refused when the estimate before this request is at the rate already.
        if previous * (1 - offset / self.duration) + current - 1 >= self.num_requests:
            self.cache.incr(current_key, -1)  # this request is refused: not counted
            self._counts = (previous, current - 1, offset)
            return False
        return True

    def _previous_count(self, window: int, key: str) -> int:
        """The previous window's count, read at most once a second per client by a throttle that lives on.

        A window that has ended takes no more counts, so an instance that
        serves many requests (``sessions_app.asgi`` keeps one per thread)
        need not read it on each: it reads each client's again after a
        second (a cache cleared to lift a limit, or the entry culled, shows
        within that), for up to 10,000 clients a window. DRF makes one
        instance per request, which reads it each time.
        """
        now = time.monotonic()
        if self._previous is None or self._previous[0] != window or len(self._previous[1]) >= 10_000:
            self._previous = (window, {})
        counts = self._previous[1]
        kept = counts.get(key)
        if kept is not None and now - kept[1] < PREVIOUS_COUNT_FOR:
            return kept[0]
        count = _count(self.cache.get(key, 0))
        counts[key] = (count, now)
        return count

    def wait(self) -> float:
        """Seconds until the estimate falls below the rate, if no other request comes (at least 1 ms)."""
        previous, current, offset = self._counts
        duration, limit = self.duration, self.num_requests
        if current < limit and previous:
            # previous * (1 - f) + current < limit once f > 1 - (limit - current) / previous.
            wait = (1 - (limit - current) / previous) * duration - offset
        elif not current:
            wait = duration - offset
        else:
            # Next window: this window's count becomes the previous one.
            wait = duration - offset + max(1 - limit / current, 0.0) * duration
        return max(wait, 0.001)


def _incr(cache: Any, key: str) -> int | None:
    """``cache.incr(key)``; ``None`` for a missing key (Django raises, a ``TolerantCache`` answers None)."""
    try:
        value = cache.incr(key)
    except ValueError:
        return None
    return None if value is None else int(value)


def _count(value: object) -> int:
    return value if type(value) is int else 0


class AnonRateThrottle(SlidingWindowMixin, drf_throttling.AnonRateThrottle):
    """DRF's ``AnonRateThrottle`` (scope ``anon``, per client address) at a constant cost per request."""


class UserRateThrottle(SlidingWindowMixin, drf_throttling.UserRateThrottle):
    """DRF's ``UserRateThrottle`` (scope ``user``, per user or key) at a constant cost per request."""
