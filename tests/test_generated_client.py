"""Clients generated from ``/api/schema/`` with real generators, round-tripping the extremes.

TypeScript: openapi-typescript turns the schema into types, ``tsc --strict``
compiles a round trip written against them with openapi-fetch (so the types
must say what the API sends: decimal strings for both 64-bit fields), and
node runs it against uvicorn serving the test database. Node.js and npm come
from the machine; the packages are pinned in ``tests/ts_client/package-lock.json``.

Python: openapi-python-client (pinned in ``requirements.txt``) generates a
package from the schema, unedited; every module of it imports, and its
calls round-trip 2**63-1 and 2**64-1 with a token and with an agent key.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from sessions_app.storage import SessionId

from .conftest import missing
from .servers import subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENT = Path(__file__).resolve().parent / "ts_client"


@pytest.fixture(scope="module")
def base(django_db_setup, django_db_blocker) -> Iterator[str]:
    """uvicorn serving the test database, for both generated clients (one start-up)."""
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    with uvicorn_server(url) as served:
        yield served


def run(*command: str, cwd: Path = CLIENT) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_a_client_generated_from_the_schema_round_trips_the_extreme_values(make_user, base, tmp_path):
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node", "Node.js and npm are not installed; scripts/install-system-packages.sh installs them")
    from rest_framework.authtoken.models import Token

    if not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")  # scripts/test.sh runs it first
    # The sources in a directory of this test's own (the test command runs
    # its cells side by side: two of them writing schema.json and build/ in
    # the checkout would mix their files), beside the installed packages.
    for name in ("package.json", "tsconfig.json", "roundtrip.ts"):
        shutil.copy(CLIENT / name, tmp_path / name)
    (tmp_path / "node_modules").symlink_to(CLIENT / "node_modules", target_is_directory=True)
    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="ts")).key
    schema = httpx.get(f"{base}/api/schema/", params={"format": "json"}, timeout=30)
    assert schema.status_code == 200
    (tmp_path / "schema.json").write_text(schema.text)
    run("node_modules/.bin/openapi-typescript", "schema.json", "--output", "schema.d.ts", cwd=tmp_path)
    run("node_modules/.bin/tsc", "-p", "tsconfig.json", cwd=tmp_path)
    output = run("node", "build/roundtrip.js", base, token, str(SessionId.new()), cwd=tmp_path)
    assert output.strip() == "round trip ok"


AGENT_ID = 2**63 - 1
STARTED_AT_NS = 2**64 - 1


def generate_python_client(schema: str, directory: Path) -> Path:
    """openapi-python-client's package for ``schema``, in ``directory`` (post hooks off: they need ruff)."""
    (directory / "schema.json").write_text(schema)
    (directory / "config.yaml").write_text("post_hooks: []\n")
    package = directory / "sessions_api_client"
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", "schema.json",
         "--config", "config.yaml", "--meta", "none", "--output-path", str(package), "--fail-on-warning"],
        cwd=directory, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"openapi-python-client:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return package


def test_a_python_client_generated_from_the_schema_round_trips_the_extreme_values(
    make_user, base, tmp_path, monkeypatch
):
    if importlib.util.find_spec("openapi_python_client") is None:
        missing("openapi-python-client", "not installed; pip install -r requirements.txt installs it")
    from rest_framework.authtoken.models import Token

    from sessions_app.models import AgentKey

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="py")).key
    _, agent_key = AgentKey.objects.create_key(name="python client", agent_ids=[AGENT_ID])
    schema = httpx.get(f"{base}/api/schema/", params={"format": "json"}, timeout=30)
    assert schema.status_code == 200
    package = generate_python_client(schema.text, tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        # Every module imports, unedited (a body listed under two content
        # types once made the PUT and POST modules fail: NameError: Unset).
        for module in pkgutil.walk_packages([str(package)], prefix="sessions_api_client."):
            importlib.import_module(module.name)
        round_trip(importlib.import_module("sessions_api_client"), base, token, agent_key)
    finally:
        for name in [name for name in sys.modules if name.partition(".")[0] == "sessions_api_client"]:
            del sys.modules[name]


def round_trip(client_package, base: str, token: str, agent_key: str) -> None:
    api = importlib.import_module("sessions_api_client.api.sessions")
    models = importlib.import_module("sessions_api_client.models")
    create, update, retrieve, destroy = (
        importlib.import_module(f"{api.__name__}.sessions_{name}")
        for name in ("create", "update", "retrieve", "destroy")
    )
    by_token = client_package.AuthenticatedClient(base_url=base, token=token, prefix="Token")
    by_key = client_package.AuthenticatedClient(base_url=base, token=agent_key, prefix="Api-Key")

    def assert_extremes(response, status: int) -> None:
        """The answer's status, and both values exactly (decimal strings: ``str(2**64 - 1)``)."""
        assert response.status_code == status, response.content
        assert response.parsed.agent_id == str(AGENT_ID)
        assert response.parsed.started_at_ns == str(STARTED_AT_NS)

    # With the token: a PUT sending JSON integers creates it, a GET reads it back.
    saved = uuid.uuid4()
    body = models.ExecutionSessionBodyRequest(agent_id=AGENT_ID, started_at_ns=STARTED_AT_NS)
    assert_extremes(update.sync_detailed(saved, client=by_token, body=body), 201)
    assert_extremes(retrieve.sync_detailed(saved, client=by_token), 200)
    # With the agent key (acting for AGENT_ID): it reads that one, and a POST
    # sending decimal strings creates another.
    assert_extremes(retrieve.sync_detailed(saved, client=by_key), 200)
    body = models.ExecutionSessionRequest(agent_id=str(AGENT_ID), started_at_ns=str(STARTED_AT_NS))
    created = create.sync_detailed(client=by_key, body=body)
    assert_extremes(created, 201)
    assert_extremes(retrieve.sync_detailed(created.parsed.session_id, client=by_token), 200)
    for session_id, client in ((saved, by_key), (created.parsed.session_id, by_token)):
        assert destroy.sync_detailed(session_id, client=client).status_code == 204
        assert retrieve.sync_detailed(session_id, client=by_token).status_code == 404
