"""The database store where it really runs: forked workers, short-lived event loops, silent hosts,
restarted servers, shutdown. Each runs for real on the database under test (SQLite or PostgreSQL).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection, connections

from sessions_app.models import ExecutionSession
from sessions_app.storage import (
    BackendError,
    CachedSessionStore,
    DjangoSessionStore,
    InMemorySessionStore,
    SessionId,
    SessionRecord,
)

from .servers import subprocess_database_url

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.django_db(transaction=True)


def needs_postgresql() -> None:
    if connection.vendor != "postgresql":
        pytest.skip("needs a database server (runs when DATABASE_URL points at PostgreSQL)")


def needs_native_path() -> None:
    if connection.vendor not in ("postgresql", "sqlite"):
        pytest.skip("the native paths exist on PostgreSQL and SQLite")


@pytest.fixture
def tagged_alias() -> Iterator[str]:
    """A copy of the test database's alias whose server sessions carry a name of their own."""
    alias = f"tagged_{uuid.uuid4().hex[:8]}"
    configured = {**connection.settings_dict, "OPTIONS": {**connection.settings_dict["OPTIONS"]}}
    if connection.vendor == "postgresql":
        configured["OPTIONS"].pop("pool", None)
        configured["OPTIONS"]["application_name"] = alias
    connections.settings[alias] = configured
    yield alias
    connections[alias].close()
    del connections.settings[alias]


def server_sessions(application_name: str) -> int:
    """Open PostgreSQL sessions with this application_name, as the server sees them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        return int(cursor.fetchone()[0])


def wait_for_sessions(application_name: str, expected: int, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while (seen := server_sessions(application_name)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def run_probe(mode: str, database_url: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "always"}
    return subprocess.run(
        [sys.executable, "-X", "dev", "-m", "tests.lifecycle_probe", mode],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- fork ---------------------------------------------------------------------


def test_a_forked_child_uses_the_store_it_inherited_and_the_parent_keeps_its_own_connection():
    needs_native_path()
    result = run_probe("fork", subprocess_database_url())
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["child_exit"] == 0
    assert seen["child"] == {"loaded": True, "saved": True}
    # The parent's call after the child exited ran on the very same server
    # session (PostgreSQL) or thread (SQLite): nothing of the parent's was
    # closed, terminated or replaced by the child.
    assert seen["parent_after"] == seen["parent_before"]
    assert seen["parent_loaded"] is True
    assert "ResourceWarning" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


# -- process exit ---------------------------------------------------------------


def test_a_process_that_used_the_store_exits_promptly_and_cleanly_finishing_queued_work():
    needs_native_path()
    started = time.monotonic()
    result = run_probe("exit", subprocess_database_url(), timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    assert time.monotonic() - started < 30
    assert "ResourceWarning" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    if connection.vendor == "sqlite":
        # The batch was queued to the SQLite thread when the loop ended; the
        # thread finished it before the process went.
        assert ExecutionSession.objects.count() == 5_000


# -- short-lived event loops ------------------------------------------------------


def test_calls_each_under_its_own_asyncio_run_leave_nothing_open(tagged_alias):
    needs_native_path()
    store = DjangoSessionStore(tagged_alias)
    record = SessionRecord(SessionId.new(), 5, 5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(25):
            asyncio.run(store.save(record))
            assert asyncio.run(store.load(record.session_id)) == record
            if connection.vendor == "postgresql":
                assert wait_for_sessions(tagged_alias, 0) == 0  # the loop's pool closed with the loop
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    threads = [t for t in threading.enumerate() if t.name == f"sessions_app-sqlite-{tagged_alias}"]
    assert len(threads) == (1 if connection.vendor == "sqlite" else 0)


def test_a_loop_closed_without_asyncio_run_has_its_connections_closed_on_the_next_pool(tagged_alias):
    needs_postgresql()
    store = DjangoSessionStore(tagged_alias)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(store.load_many([SessionId.new()]))
    loop.close()  # no shutdown_asyncgens(): nothing closed the pool
    assert server_sessions(tagged_alias) == 1
    asyncio.run(store.load_many([SessionId.new()]))
    assert wait_for_sessions(tagged_alias, 0) == 0


# -- connect timeout ----------------------------------------------------------------


@pytest.mark.parametrize(("connect_timeout", "expected"), [(2, 2.0), (None, 10.0)])
async def test_a_host_that_never_answers_is_a_backend_error_after_the_connect_timeout(
    silent_alias, connect_timeout, expected
):
    if connect_timeout is not None:
        connections.settings[silent_alias]["OPTIONS"]["connect_timeout"] = connect_timeout
    store = DjangoSessionStore(silent_alias)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await asyncio.wait_for(store.load(SessionId.new()), 60)
    waited = time.monotonic() - started
    assert expected - 0.5 < waited < expected + 5, waited
    assert caught.value.__cause__ is not None


# -- the server drops every connection -----------------------------------------------


async def test_after_the_server_drops_every_pooled_connection_the_next_calls_succeed(proxied_alias, settings):
    alias, proxy = proxied_alias
    settings.SESSIONS_APP = {"POOL_SIZE": 4}
    store = DjangoSessionStore(alias)
    kept = SessionRecord(SessionId.new(), 1, 1)
    await store.save(kept)
    # Four calls at once: four pooled connections, all idle afterwards.
    await asyncio.gather(*(store.path.execute(("SELECT pg_sleep(0.2)", ())) for _ in range(4)))
    assert store.path.pool_for_running_loop().open_count == 4

    proxy.cut()  # a restart: the server side of every connection goes away
    proxy.restore()
    for _ in range(8):  # no burst of failures: every call succeeds
        assert await store.load(kept.session_id) == kept
    await store.aclose()


async def test_an_upsert_whose_answer_was_lost_fails_rather_than_answer_wrong(proxied_alias):
    """The server wrote the record and its answer never came back: no second run that would say "replaced".

    (What a PUT answers: 201 for created, 200 for replaced; the lost call is a
    503, whose outcome the client does not know, as for any lost answer.)
    """
    alias, proxy = proxied_alias
    store = DjangoSessionStore(alias)
    await store.load_many([SessionId.new()])  # a pooled connection, reused by the next call
    for n in range(3):
        record = SessionRecord(SessionId.new(), 7, n)
        proxy.lose_next_answer()
        with pytest.raises(BackendError):
            await store.upsert(record)
        assert proxy.answers_lost == n + 1  # (the fault did happen)
        assert await store.load(record.session_id) == record  # the write was done
        assert await store.upsert(SessionRecord(record.session_id, 8, n)) is False  # replaced
        fresh = SessionRecord(SessionId.new(), 9, n)
        assert await store.upsert(fresh) is True  # created: the reconnected store answers right
    await store.aclose()


async def test_an_upsert_after_the_server_dropped_its_connections_reconnects_and_answers(proxied_alias):
    """Connections dead before the call (a restart) are found at lending: the upsert runs once, rightly."""
    alias, proxy = proxied_alias
    store = DjangoSessionStore(alias)
    await asyncio.gather(*(store.path.execute(("SELECT pg_sleep(0.1)", ())) for _ in range(3)))
    proxy.cut()
    proxy.restore()
    record = SessionRecord(SessionId.new(), 1, 1)
    assert await store.upsert(record) is True
    assert await store.upsert(record) is False
    await store.aclose()


async def test_a_call_while_the_server_is_down_fails_promptly_then_recovers(proxied_alias):
    """Refused at once, not after the connect timeout (set far above the bound, so a wait is caught).

    The bound is generous for a shared machine; a call that waited for the
    connect timeout (or hung) would take twice as long.
    """
    alias, proxy = proxied_alias
    connections.settings[alias]["OPTIONS"] = {
        **connections.settings[alias]["OPTIONS"],
        "connect_timeout": 120,
    }
    store = DjangoSessionStore(alias)
    kept = SessionRecord(SessionId.new(), 1, 1)
    await store.save(kept)
    proxy.cut()
    for call, argument in [
        (store.load, kept.session_id),
        (store.save, kept),
        (store.delete, kept.session_id),
    ]:
        with pytest.raises(BackendError):
            await asyncio.wait_for(call(argument), 60)  # TimeoutError, not BackendError, if it waited
    proxy.restore()
    assert await store.load(kept.session_id) == kept
    await store.aclose()


# -- shutdown ------------------------------------------------------------------------


async def test_aclose_closes_the_pooled_connections_server_side_and_the_store_reopens(tagged_alias):
    needs_postgresql()
    from asgiref.sync import sync_to_async

    store = DjangoSessionStore(tagged_alias)
    record = SessionRecord(SessionId.new(), 3, 3)
    await asyncio.gather(*(store.save(record) for _ in range(3)))
    assert await sync_to_async(server_sessions)(tagged_alias) >= 1
    await store.aclose()
    assert await sync_to_async(wait_for_sessions)(tagged_alias, 0) == 0
    assert await store.load(record.session_id) == record  # usable again: it reopened
    async with store:
        await store.load(record.session_id)
    assert await sync_to_async(wait_for_sessions)(tagged_alias, 0) == 0


def open_files_named(name: str) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == name
        except OSError:
            continue
    return count


async def test_aclose_closes_the_sqlite_threads_connection_and_the_store_reopens(tagged_alias, tmp_path):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite path")
    import sqlite3

    # A copy of the test database that nothing else in the process opens
    # (SQLite's backup API: a plain file copy would miss what is in the WAL).
    name = str(tmp_path / "own.sqlite3")
    source, copy = sqlite3.connect(connections.settings[tagged_alias]["NAME"]), sqlite3.connect(name)
    source.backup(copy)
    source.close()
    copy.close()
    connections.settings[tagged_alias]["NAME"] = name
    store = DjangoSessionStore(tagged_alias)
    record = SessionRecord(SessionId.new(), 3, 3)
    await store.save(record)
    assert open_files_named(name) >= 1
    async with store:
        assert await store.load(record.session_id) == record
    assert open_files_named(name) == 0
    assert await store.load(record.session_id) == record  # usable again: it reopened
    assert open_files_named(name) >= 1
    await store.aclose()


async def test_async_with_closes_every_kind_of_store():
    closed: list[str] = []

    class Recording(InMemorySessionStore):
        def __init__(self, name: str) -> None:
            super().__init__()
            self.name = name

        async def aclose(self) -> None:
            closed.append(self.name)

    memory_store = Recording("memory")
    async with memory_store as memory:
        assert memory is memory_store  # the block gets the store itself
        await memory.save(SessionRecord(SessionId.new(), 1, 1))
        assert closed == []  # not closed before the block ends
    assert closed == ["memory"]
    async with CachedSessionStore(Recording("backing")) as cached:
        await cached.save(SessionRecord(SessionId.new(), 1, 1))
    assert closed == ["memory", "backing"]
    with pytest.raises(RuntimeError):
        async with Recording("on error") as memory:
            raise RuntimeError("the block failed")
    assert closed == ["memory", "backing", "on error"]  # closed all the same


def test_two_callers_racing_to_start_the_sqlite_thread_start_one(tagged_alias):
    if connection.vendor != "sqlite":
        pytest.skip("the SQLite path")
    store = DjangoSessionStore(tagged_alias)
    worker = store.path.worker
    callers_count = 8
    barrier = threading.Barrier(callers_count)
    errors: list[BaseException] = []

    # Widen the race: the first caller to start the thread holds on, just
    # before the thread exists, until every caller has asked to start it.
    # Without the lock each of them would then start one.
    entered: list[int] = []
    entered_lock = threading.Lock()
    everyone_in = threading.Event()
    original_start, original_class = worker._start, type(worker)

    def counted_start() -> None:
        with entered_lock:
            entered.append(1)
            if len(entered) == callers_count:
                everyone_in.set()
        original_start()

    class Widened(original_class):  # type: ignore[misc, valid-type]
        @property
        def _serve(self):  # read by _start while it makes the thread
            everyone_in.wait(10)
            return original_class._serve.__get__(self)

    worker._start = counted_start
    worker.__class__ = Widened

    def call() -> None:
        try:
            barrier.wait(5)
            asyncio.run(store.load_many([SessionId.new()]))
        except BaseException as exc:
            errors.append(exc)

    try:
        callers = [threading.Thread(target=call) for _ in range(callers_count)]
        for caller in callers:
            caller.start()
        for caller in callers:
            caller.join(30)
    finally:
        worker.__class__ = original_class
        del worker._start
    assert errors == []
    assert everyone_in.is_set()  # the race was on: every caller reached the start
    assert len([t for t in threading.enumerate() if t.name == f"sessions_app-sqlite-{tagged_alias}"]) == 1


# -- Django's connection options on the native path ------------------------------------


@pytest.fixture
def role() -> Iterator[str]:
    needs_postgresql()
    name = "sessions_app_test_role"
    table = ExecutionSession._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {name} NOLOGIN")
        cursor.execute(f"GRANT {name} TO CURRENT_USER")
        cursor.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {name}")
    yield name
    with connection.cursor() as cursor:
        cursor.execute(f"REVOKE ALL ON {table} FROM {name}")


async def test_assume_role_and_isolation_level_apply_on_the_native_path(tagged_alias, role):
    connections.settings[tagged_alias]["OPTIONS"].update(
        {"assume_role": role, "isolation_level": 4}
    )  # SERIALIZABLE
    store = DjangoSessionStore(tagged_alias)
    assert store.path_name == "PostgresPath"
    assert await store.path.fetchone(("SELECT current_user", ())) == (role,)

    async def isolation(conn, cursor):
        async with conn.transaction():
            cursor = await conn.execute("SHOW transaction_isolation")
            return await cursor.fetchone()

    assert await store.path.run(isolation) == ("serializable",)
    record = SessionRecord(SessionId.new(), 9, 9)
    await store.save(record)  # the role's grants are enough for the store
    assert await store.load(record.session_id) == record
    await store.aclose()
