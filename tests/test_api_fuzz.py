"""The API fuzzed from its own OpenAPI schema (schemathesis), as a user holding every permission.

Every generated request must get an answer that is not a 5xx and that
conforms to the schema: documented status code, content type and body.
Bounded by ``EXAMPLES`` per operation. The cases are drawn with hypothesis
from schemathesis' strategies (its pytest plugin does not run under pytest 9).
"""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

EXAMPLES = 150
OPERATIONS = [
    ("GET", "/api/sessions/"),
    ("POST", "/api/sessions/"),
    ("GET", "/api/sessions/{session_id}/"),
    ("PUT", "/api/sessions/{session_id}/"),
    ("PATCH", "/api/sessions/{session_id}/"),
    ("DELETE", "/api/sessions/{session_id}/"),
    ("POST", "/api/sessions/bulk-save/"),
    ("POST", "/api/sessions/bulk-load/"),
    ("POST", "/api/sessions/bulk-delete/"),
]


@pytest.fixture
def api_schema():
    """The schema, served in-process by the project's WSGI application.

    As Django's test client does, keep the request signals from closing the
    test's database connection (and with it the test's transaction).
    """
    from django.core.signals import request_finished, request_started
    from django.db import close_old_connections

    from aa_project.wsgi import application

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def generous_throttle_rates(monkeypatch):
    """The fuzzer also probes with bad credentials, many times: rates that it never reaches."""
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "100000/minute", "user": "100000/minute"}
    )
    cache.clear()


@pytest.fixture
def token(make_user):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=make_user("view", "add", "change", "delete", username="fuzzer")).key


def test_the_schema_lists_exactly_the_fuzzed_operations(api_schema):
    listed = {(op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations()}
    assert listed == set(OPERATIONS)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_every_operation_answers_within_its_schema_and_never_5xx(api_schema, token, method, path):
    operation = api_schema[path][method]
    answered: list[int] = []

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
    )
    @given(data=st.data())
    def fuzz(data):
        case = data.draw(operation.as_strategy())
        response = case.call_and_validate(headers={"Authorization": f"Token {token}"})
        answered.append(response.status_code)
        assert response.status_code < 500

    fuzz()
    assert answered, "no request was sent"
    print(f"{method} {path}: {len(answered)} requests, statuses {sorted(set(answered))}")


@pytest.mark.parametrize("phase", ["examples", "coverage", "fuzzing", "stateful"])
def test_every_schemathesis_phase_passes_against_a_real_server(make_user, phase):
    """``st run`` with every check, one phase a test (xdist runs them side by side), bulk calls included.

    Against uvicorn serving the test database; deterministic generation, so
    two runs send the same requests.
    """
    import subprocess
    import sys
    from pathlib import Path

    from rest_framework.authtoken.models import Token

    from .servers import subprocess_database_url, uvicorn_server

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="st")).key
    st = Path(sys.executable).with_name("st")
    with uvicorn_server(subprocess_database_url(), env={"API_THROTTLE_ANON": "10000000/minute"}) as base:
        result = subprocess.run(
            [str(st), "run", f"{base}/api/schema/", "--checks", "all",
             "--phases", phase, "--generation-deterministic",
             "-n", "60", "-H", f"Authorization: Token {token}", "--no-color"],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
    assert result.returncode == 0, result.stdout[-6000:]
    assert "No issues found" in result.stdout
