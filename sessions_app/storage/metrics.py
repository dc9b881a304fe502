"""Prometheus metrics of the session store, through ``prometheus-client``.

- ``sessions_store_operations_total{operation, outcome}``: one count per
  call of a database store (``DjangoSessionStore``, ``SyncDjangoSessionStore``,
  which the REST API and ``purge_sessions`` use);
- ``sessions_store_operation_duration_seconds{operation}``: how long each took;
- ``sessions_store_pool_connections{state}``: the PostgreSQL pools'
  connections, ``open`` and ``in_use``.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory before the workers start (prometheus-client's multiprocess mode):
every worker writes there and ``/api/metrics/`` adds them up.

Counting costs a few microseconds a call, against hundreds for the call
itself; ``benchmarks/`` measures the store with it on.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Coroutine
from typing import ParamSpec, TypeVar

import prometheus_client

from .errors import BackendError, ConflictError, NotFound, SerializationError, StorageError

P = ParamSpec("P")
T = TypeVar("T")

OPERATIONS = ("save", "load", "delete", "save_many", "load_many", "delete_many", "purge")
OUTCOMES = ("ok", "not_found", "backend_error", "conflict", "serialization_error")
_OUTCOME_OF: dict[type[StorageError], str] = {
    NotFound: "not_found",
    BackendError: "backend_error",
    ConflictError: "conflict",
    SerializationError: "serialization_error",
}

OPERATIONS_TOTAL = prometheus_client.Counter(
    "sessions_store_operations",
    "Calls of the session store, by operation and outcome.",
    ["operation", "outcome"],
)
DURATION = prometheus_client.Histogram(
    "sessions_store_operation_duration_seconds",
    "How long calls of the session store took, by operation.",
    ["operation"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
POOL_CONNECTIONS = prometheus_client.Gauge(
    "sessions_store_pool_connections",
    "Connections of the PostgreSQL pools of the native async path, open and in use.",
    ["state"],
    multiprocess_mode="livesum",
)
# Children bound once: labels() on every call would cost more than the count.
_counts = {(op, outcome): OPERATIONS_TOTAL.labels(op, outcome) for op in OPERATIONS for outcome in OUTCOMES}
_durations = {op: DURATION.labels(op) for op in OPERATIONS}
_pool_open = POOL_CONNECTIONS.labels("open")
_pool_in_use = POOL_CONNECTIONS.labels("in_use")


def observe(operation: str, outcome: str, seconds: float) -> None:
    """Count one call and its duration."""
    _counts[operation, outcome].inc()
    _durations[operation].observe(seconds)


def outcome_of(exc: BaseException) -> str | None:
    """The outcome label for an error the store raised; ``None`` for bad arguments (not counted)."""
    for kind, label in _OUTCOME_OF.items():
        if isinstance(exc, kind):
            return label
    return None


def timed_async(
    operation: str,
) -> Callable[[Callable[P, Coroutine[object, object, T]]], Callable[P, Coroutine[object, object, T]]]:
    """Count and time every call of an async store method as ``operation``."""

    def decorate(
        method: Callable[P, Coroutine[object, object, T]],
    ) -> Callable[P, Coroutine[object, object, T]]:
        @functools.wraps(method)
        async def counted(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                result: T = await method(*args, **kwargs)
            except Exception as exc:
                _observe_failure(operation, exc, started)
                raise
            observe(operation, "ok", time.perf_counter() - started)
            return result

        return counted

    return decorate


def timed(operation: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Count and time every call of a sync store method as ``operation``."""

    def decorate(method: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(method)
        def counted(*args: P.args, **kwargs: P.kwargs) -> T:
            started = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            except Exception as exc:
                _observe_failure(operation, exc, started)
                raise
            observe(operation, "ok", time.perf_counter() - started)
            return result

        return counted

    return decorate


def _observe_failure(operation: str, exc: Exception, started: float) -> None:
    if (outcome := outcome_of(exc)) is not None:
        observe(operation, outcome, time.perf_counter() - started)


def pool_changed(opened: int = 0, lent: int = 0) -> None:
    """A PostgreSQL pool opened or closed connections, or lent or took back one."""
    if opened:
        _pool_open.inc(opened)
    if lent:
        _pool_in_use.inc(lent)


def pool_gauges_reset() -> None:
    """In a child made by ``os.fork()``: no pooled connection is this process' own.

    Set, not decremented: in multiprocess mode the child's gauges already
    start from 0 (a file of its own), so subtracting the parent's inherited
    counts would take them below 0; in a single process they hold the
    parent's counts, which no longer apply.
    """
    _pool_open.set(0)
    _pool_in_use.set(0)
