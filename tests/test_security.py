"""Production settings, throttling, and the audit trail of writes."""

import logging
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from rest_framework.test import APIClient

from sessions_app.storage import SessionId

ROOT = Path(__file__).resolve().parent.parent


def manage(*args: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop("DJANGO_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_production_settings_pass_the_deploy_checks_with_no_warnings():
    result = manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DJANGO_DEBUG="0",
        DJANGO_SECRET_KEY=secrets.token_urlsafe(60),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_refuses_to_start_with_debug_off_and_the_development_key():
    result = manage("check", DJANGO_DEBUG="0")
    assert result.returncode != 0
    assert "refusing to run in production with the development secret key" in result.stderr


@pytest.mark.django_db
def test_anonymous_requests_are_throttled_even_when_refused(low_throttle_rates):
    client = APIClient()
    statuses = [client.get("/api/sessions/").status_code for _ in range(5)]
    assert statuses == [401, 401, 401, 429, 429]


@pytest.mark.django_db
def test_authenticated_requests_are_throttled_per_user(low_throttle_rates, make_user):
    first, second = APIClient(), APIClient()
    first.force_authenticate(make_user("view", username="first"))
    second.force_authenticate(make_user("view", username="second"))
    statuses = [first.get("/api/sessions/").status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    assert second.get("/api/sessions/").status_code == 200
    assert "Retry-After" in first.get("/api/sessions/")


@pytest.mark.django_db
def test_api_writes_are_logged_with_the_user_and_the_session_id(api, caplog):
    sid = SessionId.new()
    with caplog.at_level(logging.INFO, logger="sessions_app.api"):
        api.put(f"/api/sessions/{sid}/", {"agent_id": 1, "started_at_ns": 1}, format="json")
        api.patch(f"/api/sessions/{sid}/", {"agent_id": 2}, format="json")
        api.delete(f"/api/sessions/{sid}/")
    records = [r for r in caplog.records if r.name == "sessions_app.api"]
    assert [r.action for r in records] == ["created", "changed agent_id", "deleted"]
    assert all(r.session_id == str(sid) and "operator" in r.getMessage() for r in records)
