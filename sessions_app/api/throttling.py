"""Slowing down credential guessing: failed authentications counted per client address.

DRF's throttles run after authentication, so a client trying tokens or
keys is refused (401) before any throttle counts it, and each guess costs
a database query. Here each failed authentication is counted per client
address, and an address that failed ``SESSIONS_APP["AUTH_FAILURE_RATE"]``
times in the window gets 429 with ``Retry-After`` for every request until
the window passes, before any credential is looked at (so without a
database query, and even with a correct key).

The address is DRF's ``get_ident``: ``REMOTE_ADDR``, or the
``X-Forwarded-For`` entry that ``REST_FRAMEWORK["NUM_PROXIES"]`` proxies
vouch for. The counts live in the cache DRF's throttles use (``default``);
while that cache is down they are not kept, and no address is refused.
"""

from __future__ import annotations

from typing import Any

from django.core.cache import cache as default_cache
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from ..caching import alias_of, tolerant
from ..conf import app_settings


class AuthFailureThrottle(SimpleRateThrottle):
    """Counts failed authentications per client address; ``wait_for`` says how long one is refused."""

    scope = "auth_failure"
    cache_format = "sessions_app:auth-failures:%(ident)s"

    def __init__(self) -> None:
        super().__init__()
        # The shared object; with the cache down, failures go uncounted (logged once).
        self.cache = tolerant(alias_of(default_cache) or "default")  # type: ignore[assignment]
        limit, window = self.parse_rate(self.rate)
        self.limit: int = limit or 0
        self.window: float = float(window or 0)

    def get_rate(self) -> str | None:
        rate: str | None = app_settings.AUTH_FAILURE_RATE
        return rate

    def get_cache_key(self, request: Request, view: Any) -> str:
        return self.cache_format % {"ident": self.get_ident(request)}

    def wait_for(self, request: Request) -> float | None:
        """Seconds this address stays refused, or ``None`` if it may try."""
        if not self.limit:
            return None
        now, recent = self._recent(request)
        if len(recent) < self.limit:
            return None
        # Newest first: the address may try again once the limit-th newest
        # failure has left the window.
        return max(recent[self.limit - 1] + self.window - now, 0.001)

    def record_failure(self, request: Request) -> None:
        if not self.limit:
            return
        now, recent = self._recent(request)
        self.cache.set(self.get_cache_key(request, None), [now, *recent], self.window)

    def _recent(self, request: Request) -> tuple[float, list[float]]:
        now: float = self.timer()
        history = self.cache.get(self.get_cache_key(request, None))
        if not isinstance(history, list):
            return now, []
        return now, [moment for moment in history if isinstance(moment, float) and moment > now - self.window]


class GuessingSlowedDown:
    """A DRF view mixin: ``check_auth_failures`` before authentication, failures counted.

    ``ExecutionSessionViewSet`` puts the check first among its policy
    checks; any other ``APIView`` gets it at the start of ``initial``.
    """

    def auth_failure_throttle(self) -> AuthFailureThrottle:
        throttle: AuthFailureThrottle | None = getattr(self, "_auth_failure_throttle", None)
        if throttle is None:
            throttle = self._auth_failure_throttle = AuthFailureThrottle()
        return throttle

    def check_auth_failures(self, request: Request) -> None:
        wait = self.auth_failure_throttle().wait_for(request)
        if wait is not None:
            raise exceptions.Throttled(wait)

    def perform_authentication(self, request: Request) -> None:
        try:
            super().perform_authentication(request)  # type: ignore[misc]
        except exceptions.AuthenticationFailed:
            self.auth_failure_throttle().record_failure(request)
            raise
