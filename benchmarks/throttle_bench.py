"""DRF's ``UserRateThrottle`` against this app's (``sessions_app.api.throttling``), per request.

One user calling at a steady rate, the cache Django's ``LocMemCache`` (the
host project's default; the cost is the pickling of what the throttle keeps,
which a network cache adds its round trip to). DRF's throttle keeps every
request's time of the window, so its cost grows with the requests already
made in the window; the counters' does not. Printed: microseconds per
``allow_request`` after 1,000, 10,000 and 50,000 requests in the window,
and DRF's time over this app's.

    .venv/bin/python -m benchmarks.throttle_bench
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from django.core.cache import caches  # noqa: E402
from rest_framework import throttling as drf  # noqa: E402

from sessions_app.api import throttling as ours  # noqa: E402


class User:
    is_authenticated = True
    pk = 1


class Request:
    user = User()
    META = {"REMOTE_ADDR": "127.0.0.1"}
    headers: dict[str, str] = {}


def per_call(cls: type, made: int, *, measured: int = 300) -> float:
    """Microseconds per allow_request once ``made`` requests are in the window."""
    caches["default"].clear()
    clock = [1_000_000.0]

    def make() -> drf.SimpleRateThrottle:
        throttle = cls()
        throttle.rate, throttle.num_requests, throttle.duration = "100000000/day", 100_000_000, 86_400
        throttle.timer = lambda: clock[0]
        throttle.cache = caches["default"]
        return throttle

    for _ in range(made):
        clock[0] += 0.001
        make().allow_request(Request(), None)
    started = time.perf_counter()
    for _ in range(measured):
        clock[0] += 0.001
        assert make().allow_request(Request(), None)
    return (time.perf_counter() - started) / measured * 1e6


def main() -> None:
    print("UserRateThrottle.allow_request, LocMemCache, one user, microseconds per call")
    print(f"{'in window':>10} {'DRF':>10} {'this app':>10} {'DRF / this app':>15}")
    for made in (1_000, 10_000, 50_000):
        theirs = per_call(drf.UserRateThrottle, made)
        mine = per_call(ours.UserRateThrottle, made)
        print(f"{made:>10} {theirs:>10.1f} {mine:>10.1f} {theirs / mine:>14.1f}x")


if __name__ == "__main__":
    main()
