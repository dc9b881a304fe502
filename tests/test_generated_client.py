"""A TypeScript client generated from ``/api/schema/`` with real generators, round-tripping the extremes.

openapi-typescript turns the schema into types, ``tsc --strict`` compiles a
round trip written against them with openapi-fetch (so the types must say
what the API sends: decimal strings for both 64-bit fields), and node runs
it against uvicorn serving the test database. Node.js and npm come from the
machine; the packages are pinned in ``tests/ts_client/package-lock.json``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from sessions_app.storage import SessionId

from .conftest import missing
from .servers import subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

CLIENT = Path(__file__).resolve().parent / "ts_client"


def run(*command: str) -> str:
    result = subprocess.run(command, cwd=CLIENT, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_a_client_generated_from_the_schema_round_trips_the_extreme_values(make_user):
    if shutil.which("node") is None or shutil.which("npm") is None:
        missing("node", "Node.js and npm are not installed; scripts/install-system-packages.sh installs them")
    from rest_framework.authtoken.models import Token

    if not (CLIENT / "node_modules" / ".bin" / "tsc").exists():
        run("npm", "ci", "--no-audit", "--no-fund", "--loglevel=error")
    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="ts")).key
    with uvicorn_server(subprocess_database_url()) as base:
        schema = httpx.get(f"{base}/api/schema/", params={"format": "json"}, timeout=30)
        assert schema.status_code == 200
        (CLIENT / "schema.json").write_text(schema.text)
        run("node_modules/.bin/openapi-typescript", "schema.json", "--output", "schema.d.ts")
        run("node_modules/.bin/tsc", "-p", "tsconfig.json")
        output = run("node", "build/roundtrip.js", base, token, str(SessionId.new()))
    assert output.strip() == "round trip ok"
