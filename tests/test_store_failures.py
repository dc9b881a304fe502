"""Failures reach the caller as the contract's errors, never as driver exceptions."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

from sessions_app.storage import BackendError, DjangoSessionStore, SerializationError, SessionId

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import asyncio, json, django
django.setup()
from django.conf import settings
settings.SESSIONS_APP = {"POOL_TIMEOUT": 1.0}  # how long a pooled path waits for a connection
from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord, StorageError

async def main():
    store = DjangoSessionStore()
    record = SessionRecord(SessionId.new(), 1, 1)
    calls = {
        "save": (store.save, record),
        "load": (store.load, record.session_id),
        "delete": (store.delete, record.session_id),
        "save_many": (store.save_many, [record]),
        "load_many": (store.load_many, [record.session_id]),
        "delete_many": (store.delete_many, [record.session_id]),
    }
    outcome = {}
    for name, (method, argument) in calls.items():
        try:
            await method(argument)
            outcome[name] = "no error"
        except StorageError as exc:
            outcome[name] = [type(exc).__name__, type(exc.__cause__).__name__]
        except BaseException as exc:
            outcome[name] = ["escaped", type(exc).__name__]
    print(json.dumps(outcome))

asyncio.run(main())
"""


def unreachable_database_url(tmp_path: Path) -> str:
    if connection.vendor == "sqlite":
        return f"sqlite:///{tmp_path / 'missing-folder' / 'db.sqlite3'}"
    if connection.vendor == "postgresql":
        return "postgres://postgres@127.0.0.1:1/test"  # nothing listens on port 1
    return "mysql://root@127.0.0.1:1/test"


def test_a_process_whose_database_is_unreachable_gets_backend_error_from_every_call(tmp_path):
    env = {**os.environ, "DATABASE_URL": unreachable_database_url(tmp_path), "PYTHONPATH": str(ROOT)}
    env["DJANGO_SETTINGS_MODULE"] = "aa_project.settings"
    result = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome == {
        name: ["BackendError", "OperationalError"]
        for name in ("save", "load", "delete", "save_many", "load_many", "delete_many")
    }


@pytest.mark.django_db(transaction=True)
async def test_missing_table_is_a_backend_error():
    from sessions_app.models import AbstractExecutionSession

    class Orphan(AbstractExecutionSession):
        class Meta:
            app_label = "sessions_app"
            db_table = "no_such_table_here"
            managed = False

    with pytest.raises(BackendError, match="no_such_table_here") as caught:
        await DjangoSessionStore(model=Orphan).load(SessionId.new())
    assert caught.value.__cause__ is not None


def plant_undecodable_row(sid: SessionId) -> None:
    """Store a row for ``sid`` whose agent id is out of the contract's range, around every guard.

    Each database's own way past its CHECK constraint: SQLite's
    ignore_check_constraints, MariaDB's check_constraint_checks, and on
    PostgreSQL dropping the constraints and adding them back NOT VALID
    (kept for new rows, not checked against this one).
    """
    table = "sessions_app_executionsession"
    insert = f"INSERT INTO {table} (session_id, agent_id, started_at_ns) VALUES (%s, %s, %s)"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.execute("PRAGMA ignore_check_constraints = ON")
            cursor.execute(insert, [sid.as_bytes(), -7, 0])
            cursor.execute("PRAGMA ignore_check_constraints = OFF")
        elif connection.vendor == "mysql":
            cursor.execute("SET SESSION check_constraint_checks = 0")
            cursor.execute(insert, [sid.as_bytes(), 2**63, 0])  # the unsigned column holds it
            cursor.execute("SET SESSION check_constraint_checks = 1")
        else:
            cursor.execute(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass AND contype = 'c'",
                [table],
            )
            checks = cursor.fetchall()
            for name, _ in checks:
                cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
            cursor.execute(insert, [sid.as_bytes(), -7, 0])
            for name, definition in checks:
                cursor.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition} NOT VALID')


@pytest.mark.django_db(transaction=True)
async def test_a_row_that_does_not_decode_is_a_serialization_error():
    from asgiref.sync import sync_to_async

    sid = SessionId.new()
    await sync_to_async(plant_undecodable_row)(sid)
    for store in (DjangoSessionStore(), DjangoSessionStore(native_async=False)):
        with pytest.raises(SerializationError, match="agent_id"):
            await store.load(sid)
        with pytest.raises(SerializationError):
            await store.load_many([sid])


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_an_undecodable_row_with_a_json_500_and_logs_the_id(api, caplog):
    sid = SessionId.new()
    plant_undecodable_row(sid)
    api.raise_request_exception = False
    with caplog.at_level("ERROR", logger="sessions_app.api"):
        response = api.get(f"/api/sessions/{sid}/")
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("application/json")
    assert "does not decode" in response.json()["detail"]
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.name == "sessions_app.api"]
    assert len(logged) == 1 and str(sid) in logged[0].getMessage()


class _DriverError(Exception):
    def __init__(self, *args, sqlstate=None):
        super().__init__(*args)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    ("cause", "transient"),
    [
        (_DriverError(1213, "Deadlock found when trying to get lock"), True),
        (_DriverError(1205, "Lock wait timeout exceeded"), True),
        (_DriverError(sqlstate="40P01"), True),
        (_DriverError(sqlstate="40001"), True),
        (_DriverError(1062, "Duplicate entry"), False),
        (_DriverError(sqlstate="23505"), False),
        (_DriverError("connection refused"), False),
    ],
)
def test_only_deadlocks_and_serialization_failures_are_retried(cause, transient):
    from django.db import OperationalError

    from sessions_app.storage.db import is_transient

    wrapped = OperationalError(str(cause))
    wrapped.__cause__ = cause
    assert is_transient(wrapped) is transient


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("failures", "cause", "inside_atomic", "attempts", "succeeds"),
    [
        (2, _DriverError(sqlstate="40P01"), False, 3, True),  # two deadlocks, then through
        (2, _DriverError(1213, "Deadlock found"), False, 3, True),  # MySQL's code
        (5, _DriverError(sqlstate="40001"), False, 3, False),  # gives up after three attempts
        (1, _DriverError("connection refused"), False, 1, False),  # not transient: no retry
        (1, _DriverError(sqlstate="40P01"), True, 1, False),  # the caller's transaction died with it
    ],
)
def test_the_sync_store_retries_deadlock_victims_a_bounded_number_of_times(
    failures, cause, inside_atomic, attempts, succeeds
):
    from django.db import OperationalError, transaction

    from sessions_app.storage.db.portable import CursorRunner

    tried = []

    def work(cursor):
        tried.append(1)
        cursor.execute("SELECT 1")
        if len(tried) <= failures:
            error = OperationalError(str(cause))
            error.__cause__ = cause
            raise error
        return "done"

    runner = CursorRunner("default")
    if inside_atomic:
        with transaction.atomic(), pytest.raises(BackendError):
            runner.run(work)
    elif succeeds:
        assert runner.run(work) == "done"
    else:
        with pytest.raises(BackendError) as caught:
            runner.run(work)
        assert caught.value.__cause__.__cause__ is cause
    assert len(tried) == attempts


@pytest.mark.django_db(transaction=True)
async def test_the_native_postgresql_path_retries_a_deadlock_victim():
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL path")
    import psycopg

    store = DjangoSessionStore()
    tried = []

    async def work(conn, cursor):
        tried.append(1)
        await conn.execute("SELECT 1")
        if len(tried) < 3:
            raise psycopg.errors.DeadlockDetected("injected deadlock")
        return "done"

    assert await store.path.run(work) == "done"
    assert len(tried) == 3
    tried.clear()

    async def always(conn, cursor):
        tried.append(1)
        raise psycopg.errors.DeadlockDetected("injected deadlock")

    with pytest.raises(BackendError, match="injected deadlock"):
        await store.path.run(always)
    assert len(tried) == 3
