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


@pytest.mark.django_db(transaction=True)
async def test_a_row_that_does_not_decode_is_a_serialization_error():
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite lets a test bypass the agent_id CHECK constraint to plant a bad row")
    from asgiref.sync import sync_to_async

    sid = SessionId.new()

    def plant() -> None:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA ignore_check_constraints = ON")
            cursor.execute(
                "INSERT INTO sessions_app_executionsession VALUES (%s, %s, %s)", [sid.as_bytes(), -7, 0]
            )
            cursor.execute("PRAGMA ignore_check_constraints = OFF")

    await sync_to_async(plant)()
    with pytest.raises(SerializationError, match="agent_id"):
        await DjangoSessionStore().load(sid)
    with pytest.raises(SerializationError):
        await DjangoSessionStore().load_many([sid])


@pytest.mark.django_db(transaction=True)
def test_the_api_answers_an_undecodable_row_with_a_json_500_and_logs_the_id(api, caplog):
    if connection.vendor != "sqlite":
        pytest.skip("only SQLite lets a test bypass the agent_id CHECK constraint to plant a bad row")
    sid = SessionId.new()
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA ignore_check_constraints = ON")
        cursor.execute(
            "INSERT INTO sessions_app_executionsession VALUES (%s, %s, %s)", [sid.as_bytes(), -7, 0]
        )
        cursor.execute("PRAGMA ignore_check_constraints = OFF")
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
