"""The store and the API behind a real PgBouncer in transaction mode.

Each transaction may run on another server connection there, so a
server-side prepared statement made on one meets another client's of the
same name, or is missing: psycopg's default (prepare after five uses) fails
behind it. The native path prepares nothing unless
``DATABASES[alias]["OPTIONS"]["prepare_threshold"]`` asks (Django's own
default); this module shows the failure with the threshold set, and the
store's conformance routine, a concurrent load and the API under uvicorn
passing without it.

PgBouncer is Debian's ``pgbouncer`` (``scripts/install-system-packages.sh``
installs it), started here on a free loopback port with ``pool_mode =
transaction`` and one server connection per database, so that every client
connection shares it; it points at the server of the test database.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from django.db import connection, connections

from sessions_app.storage import (
    DjangoSessionStore,
    SessionId,
    SessionRecord,
    StorageError,
    assert_session_store_conformance,
)

from .conftest import missing
from .servers import free_port, loopback_settings, subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def pgbouncer_executable() -> str | None:
    return shutil.which("pgbouncer") or next(
        (path for path in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(path, os.X_OK)), None
    )


@pytest.fixture(scope="module")
def pgbouncer_port(django_db_setup, django_db_blocker) -> Iterator[int]:
    """A PgBouncer of this module's own, in transaction mode, in front of the test database's server."""
    if connection.vendor != "postgresql":
        pytest.skip("PgBouncer pools PostgreSQL connections (runs when DATABASE_URL points at PostgreSQL)")
    executable = pgbouncer_executable()
    if executable is None:
        missing("pgbouncer", "not installed; scripts/install-system-packages.sh installs Debian's pgbouncer")
    settings = connection.settings_dict
    user = settings["USER"] or "postgres"
    port = free_port()
    # World-readable: PgBouncer refuses to run as root, and drops to nobody.
    directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
    directory.chmod(0o755)
    (directory / "users.txt").write_text(f'"{user}" ""\n')
    (directory / "pgbouncer.ini").write_text(
        "[databases]\n"
        f"* = host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432}\n"
        "[pgbouncer]\n"
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {directory / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 1\nmax_client_conn = 200\n"
        "server_reset_query =\nignore_startup_parameters = extra_float_digits\n"
    )
    for path in directory.iterdir():
        path.chmod(0o644)
    command = [executable, *(["-u", "nobody"] if os.geteuid() == 0 else []), str(directory / "pgbouncer.ini")]
    log = (directory / "pgbouncer.log").open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                psycopg.connect(
                    host="127.0.0.1", port=port, user=user, dbname=settings["NAME"], connect_timeout=2
                ).close()
                break
            except psycopg.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(f"pgbouncer did not come up:\n{(directory / 'pgbouncer.log').read_text()}")
                time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def bouncer_alias(pgbouncer_port) -> Iterator[str]:
    """An alias for the test database through PgBouncer, with OPTIONS as the README documents them."""
    alias = "through_pgbouncer"
    configured = loopback_settings(pgbouncer_port)
    # As deployment.md says behind PgBouncer: no prepare_threshold (the host's 5 is for a direct line).
    configured["OPTIONS"] = {k: v for k, v in configured["OPTIONS"].items() if k != "prepare_threshold"}
    connections.settings[alias] = configured
    yield alias
    del connections.settings[alias]


@pytest.fixture
def preparing_alias(pgbouncer_port) -> Iterator[str]:
    """The same, with psycopg's own default turned back on: prepare each statement after five uses."""
    alias = "through_pgbouncer_preparing"
    configured = loopback_settings(pgbouncer_port)
    configured["OPTIONS"] = {**configured["OPTIONS"], "prepare_threshold": 5}
    connections.settings[alias] = configured
    yield alias
    del connections.settings[alias]


async def busy(store: DjangoSessionStore, rounds: int = 8, width: int = 24) -> None:
    """Concurrent saves, loads and deletes: several client connections, each statement many times."""
    for _ in range(rounds):
        records = [SessionRecord(SessionId.new(), n, n) for n in range(width)]
        await asyncio.gather(*(store.save(record) for record in records))
        loaded = await asyncio.gather(*(store.load(record.session_id) for record in records))
        assert loaded == records
        await asyncio.gather(*(store.delete(record.session_id) for record in records))
        assert await store.load_many([record.session_id for record in records]) == {}


async def test_prepared_statements_fail_behind_a_transaction_pooler(preparing_alias):
    """The failure the default avoids, made on purpose: the harness really pools by transaction."""
    store = DjangoSessionStore(using=preparing_alias)
    assert store.path_name == "PostgresPath"
    with pytest.raises(StorageError, match="prepared statement"):
        await busy(store)


async def test_the_native_path_prepares_nothing_unless_asked(bouncer_alias):
    store = DjangoSessionStore(using=bouncer_alias)
    assert store.path_name == "PostgresPath"
    assert "prepare_threshold" not in connections.settings[bouncer_alias]["OPTIONS"]
    await busy(store)


async def test_conformance_behind_pgbouncer(bouncer_alias):
    store = DjangoSessionStore(using=bouncer_alias)
    for n in range(3):
        await assert_session_store_conformance(store, SessionRecord(SessionId.new(), n, 2**64 - 1 - n))
    records = [SessionRecord(SessionId.new(), n, n) for n in range(50)]
    await store.save_many(records)
    assert await store.load_many([record.session_id for record in records]) == {
        record.session_id: record for record in records
    }
    await store.delete_many([record.session_id for record in records])


async def test_prepare_threshold_none_as_documented(pgbouncer_port):
    alias = "through_pgbouncer_none"
    configured = loopback_settings(pgbouncer_port)
    configured["OPTIONS"] = {**configured["OPTIONS"], "prepare_threshold": None}
    connections.settings[alias] = configured
    try:
        await busy(DjangoSessionStore(using=alias), rounds=4)
    finally:
        del connections.settings[alias]


def test_the_api_under_uvicorn_behind_pgbouncer(pgbouncer_port, make_user, django_db_blocker):
    """The host project served by uvicorn, its database reached through PgBouncer: detail (the async
    view on the native path), bulk and list routes, from several connections at once."""
    from rest_framework.authtoken.models import Token

    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="bounced")).key
    headers = {"Authorization": f"Token {token}"}
    ids = [str(SessionId.new()) for _ in range(12)]

    async def drive(base: str) -> None:
        limits = httpx.Limits(max_connections=6)
        async with httpx.AsyncClient(base_url=base, headers=headers, timeout=30, limits=limits) as client:

            async def one(sid: str, n: int) -> None:
                body = {"agent_id": n, "started_at_ns": str(n)}
                assert (await client.put(f"/api/sessions/{sid}/", json=body)).status_code in (200, 201)
                got = await client.get(f"/api/sessions/{sid}/")
                assert got.status_code == 200 and got.json()["agent_id"] == str(n)

            for n in range(8):
                await asyncio.gather(*(one(sid, n) for sid in ids))
            bulk = [
                {"session_id": str(SessionId.new()), "agent_id": 7, "started_at_ns": "7"} for _ in range(20)
            ]
            bulk_ids = [item["session_id"] for item in bulk]
            for _ in range(3):
                saved = await client.post("/api/sessions/bulk-save/", json={"sessions": bulk})
                assert saved.status_code == 200, saved.text
                loaded = await client.post("/api/sessions/bulk-load/", json={"session_ids": bulk_ids})
                assert loaded.status_code == 200 and len(loaded.json()["sessions"]) == 20, loaded.text
            deleted = await client.post("/api/sessions/bulk-delete/", json={"session_ids": bulk_ids})
            assert deleted.status_code == 200 and deleted.json()["deleted"] == 20, deleted.text
            listed = await client.get("/api/sessions/", params={"page_size": 100})
            assert listed.status_code == 200, listed.text
            assert {row["session_id"] for row in listed.json()["results"]} >= set(ids)
            for sid in ids:
                assert (await client.delete(f"/api/sessions/{sid}/")).status_code == 204
            assert (await client.get(f"/api/sessions/{ids[0]}/")).status_code == 404

    url = subprocess_database_url(host="127.0.0.1", port=pgbouncer_port)
    # The host project prepares statements unless told not to (its documented setting behind PgBouncer).
    with uvicorn_server(url, workers=1, env={"DJANGO_DB_PREPARE_THRESHOLD": ""}) as base:
        asyncio.run(drive(base))
