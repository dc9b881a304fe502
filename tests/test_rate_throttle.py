"""The API's rate throttles (``sessions_app.api.throttling``): DRF's rates, counted per window."""

from __future__ import annotations

import threading

import pytest
from django.core.cache import caches

from sessions_app.api.throttling import AnonRateThrottle, UserRateThrottle


class User:
    is_authenticated = True

    def __init__(self, pk: int) -> None:
        self.pk = pk


class Request:
    def __init__(self, user: object = None, address: str = "127.0.0.1") -> None:
        self.user = user
        self.META = {"REMOTE_ADDR": address}
        self.headers: dict[str, str] = {}


@pytest.fixture
def clock():
    caches["default"].clear()
    return [6000.0]  # the start of a minute


def throttle(cls, clock, rate: str = "3/min"):
    made = cls()
    made.rate = rate
    made.num_requests, made.duration = made.parse_rate(rate)
    made.timer = lambda: clock[0]
    return made


def test_the_rate_holds_within_a_window_per_user(clock):
    alice, bob = Request(User(1)), Request(User(2))
    assert [throttle(UserRateThrottle, clock).allow_request(alice, None) for _ in range(4)] == [
        True, True, True, False,
    ]  # fmt: skip
    assert throttle(UserRateThrottle, clock).allow_request(bob, None)  # another user: another count
    refused = throttle(UserRateThrottle, clock)
    clock[0] += 10
    assert not refused.allow_request(alice, None)
    # The three are this window's count; from the next window on they weigh
    # by the share of the previous window the sliding minute still covers.
    assert refused.wait() == pytest.approx(50)
    clock[0] += 50 + 1
    assert throttle(UserRateThrottle, clock).allow_request(alice, None)  # 3 * 59/60 < 3
    assert not throttle(UserRateThrottle, clock).allow_request(alice, None)  # 3 * 59/60 + 1 >= 3


def test_the_previous_window_counts_by_the_share_still_inside(clock):
    alice = Request(User(1))
    clock[0] += 59
    for _ in range(3):
        assert throttle(UserRateThrottle, clock).allow_request(alice, None)
    clock[0] += 2  # 1 s into the next window: 3 * 59/60 < 3, one more fits
    assert throttle(UserRateThrottle, clock).allow_request(alice, None)
    refused = throttle(UserRateThrottle, clock)
    assert not refused.allow_request(alice, None)
    # 3 * (1 - f) + 1 < 3 once f > 1/3 of the window: 20 s in, 19 s from now.
    assert refused.wait() == pytest.approx(19)
    clock[0] += 19.5
    assert throttle(UserRateThrottle, clock).allow_request(alice, None)


def test_anonymous_requests_count_per_address_and_users_are_left_to_the_user_throttle(clock):
    first, second = Request(address="10.0.0.1"), Request(address="10.0.0.2")
    assert [throttle(AnonRateThrottle, clock, "2/min").allow_request(first, None) for _ in range(3)] == [
        True, True, False,
    ]  # fmt: skip
    assert throttle(AnonRateThrottle, clock, "2/min").allow_request(second, None)
    for _ in range(5):
        assert throttle(AnonRateThrottle, clock, "2/min").allow_request(Request(User(1)), None)


def test_requests_at_once_are_each_counted(clock):
    """DRF's list is read and written back whole (a lost update); the counter is added to atomically."""
    alice = Request(User(1))
    allowed = []
    start = threading.Barrier(8)

    def call() -> None:
        start.wait(timeout=10)
        for _ in range(25):
            allowed.append(throttle(UserRateThrottle, clock, "100/min").allow_request(alice, None))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert allowed.count(True) == 100  # 200 tried at once, exactly the rate got through


def test_no_rate_means_no_limit_and_no_count(clock):
    unlimited = throttle(UserRateThrottle, clock)
    unlimited.rate = None
    assert all(unlimited.allow_request(Request(User(1)), None) for _ in range(10))
    assert caches["default"]._cache == {}  # type: ignore[attr-defined]


class CountingCache:
    """A cache that counts the reads of each key (the throttles' ``get``), over Django's ``default``."""

    def __init__(self) -> None:
        self.cache = caches["default"]
        self.reads: dict[str, int] = {}

    def get(self, key: str, default: object = None) -> object:
        self.reads[key] = self.reads.get(key, 0) + 1
        return self.cache.get(key, default)

    def __getattr__(self, name: str) -> object:
        return getattr(self.cache, name)


def test_a_throttle_kept_for_many_requests_reads_each_clients_previous_window_once(clock):
    """As ``sessions_app.asgi`` keeps one per thread: the same decisions, one read per window and client."""
    kept = throttle(UserRateThrottle, clock, "4/min")
    kept.cache = CountingCache()
    alice, bob = Request(User(1)), Request(User(2))
    clock[0] += 30
    assert [kept.allow_request(alice, None) for _ in range(3)] == [True] * 3
    clock[0] += 45  # 15 s into the next window: alice's 3 weigh 3 * 45/60 = 2.25
    assert [kept.allow_request(alice, None) for _ in range(3)] == [True, True, False]
    assert [kept.allow_request(bob, None) for _ in range(5)] == [True] * 4 + [False]
    assert kept.cache.reads == {"throttle_user_1:99": 1, "throttle_user_1:100": 1, "throttle_user_2:100": 1}
    # A throttle made per request (DRF's way) decides the same from the cache.
    assert not throttle(UserRateThrottle, clock, "4/min").allow_request(alice, None)
    clock[0] += 60  # the window after: alice's 2 there weigh 1.5
    assert [kept.allow_request(alice, None) for _ in range(4)] == [True] * 3 + [False]
    assert kept.cache.reads["throttle_user_1:101"] == 1
