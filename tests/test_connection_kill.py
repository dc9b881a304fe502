"""Every route answers after the server drops every connection the app holds (PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from django.db import connection

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

from .servers import subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

APP_NAME = "sessions-connection-kill-test"


@pytest.fixture(scope="module")
def base(django_db_setup, django_db_blocker) -> Iterator[str]:
    if connection.vendor != "postgresql":
        pytest.skip("terminates PostgreSQL backends (runs when DATABASE_URL points at PostgreSQL)")
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    # libpq names the server's connections, so that only they are terminated:
    # the test process' own (its other tests' too, under pytest-xdist) live on.
    with uvicorn_server(url, env={"PGAPPNAME": APP_NAME}) as served:
        yield served


def terminate_the_apps_connections() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = %s",
            [APP_NAME],
        )
        return cursor.fetchone()[0]


def test_no_call_fails_after_the_server_drops_every_connection(base, api, make_user):
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="ops")).key
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=1, started_at_ns=1)
    headers = {"Authorization": f"Token {token}"}
    calls = [
        ("GET", f"/api/sessions/{sid}/", None),
        ("GET", "/api/sessions/", None),
        ("POST", "/api/sessions/bulk-load/", {"session_ids": [str(sid)]}),
        (
            "POST",
            "/api/sessions/bulk-save/",
            {"sessions": [{"session_id": str(sid), "agent_id": 1, "started_at_ns": 2}]},
        ),
        ("PUT", f"/api/sessions/{sid}/", {"agent_id": 1, "started_at_ns": 3}),
    ]
    with httpx.Client(base_url=base, headers=headers, timeout=10) as client:
        for _ in range(3):  # both pools (Django's and the native path's) hold connections now
            for method, url, body in calls:
                assert client.request(method, url, json=body).status_code == 200
        for _ in range(3):
            assert terminate_the_apps_connections() >= 1
            answers = [client.request(method, url, json=body).status_code for method, url, body in calls * 2]
            assert answers == [200] * len(answers)
