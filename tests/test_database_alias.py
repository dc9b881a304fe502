"""``SESSIONS_APP["DATABASE_ALIAS"]`` chooses the database of the store, the API and purge_sessions."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from django.core.management import call_command
from django.db import connection, connections

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId, SessionRecord, get_session_store

pytestmark = pytest.mark.django_db(transaction=True, databases=["default", "other"])


@pytest.fixture(scope="module", autouse=True)
def other_database(django_db_setup, django_db_blocker, tmp_path_factory) -> Iterator[str]:
    """A second, migrated database beside the test database, for this module's tests.

    Module-scoped so that the alias exists before pytest-django checks each
    test's ``databases``.
    """
    from django.conf import settings

    alias = "other"
    configured = {**connection.settings_dict, "OPTIONS": dict(connection.settings_dict["OPTIONS"])}
    configured["OPTIONS"].pop("pool", None)
    with django_db_blocker.unblock():
        if connection.vendor == "sqlite":
            configured["NAME"] = str(tmp_path_factory.mktemp("other") / "other.sqlite3")
        else:
            configured["NAME"] = f"sessions_other_{uuid.uuid4().hex[:8]}"
            with connection.cursor() as cursor:
                cursor.execute(f"CREATE DATABASE {configured['NAME']}")
        settings.DATABASES[alias] = connections.settings[alias] = configured
        call_command("migrate", database=alias, verbosity=0)
    yield alias
    with django_db_blocker.unblock():
        connections[alias].close()
        settings.DATABASES.pop(alias, None)
        connections.settings.pop(alias, None)  # often the same dict
        if connection.vendor != "sqlite":
            with connection.cursor() as cursor:
                cursor.execute(f"DROP DATABASE {configured['NAME']}")


@pytest.fixture
def other_alias(settings, other_database) -> str:
    settings.SESSIONS_APP = {"DATABASE_ALIAS": other_database}
    return other_database


def rows(alias: str) -> int:
    return ExecutionSession.objects.using(alias).count()


def test_get_session_store_uses_the_configured_database(other_alias):
    import asyncio

    store = get_session_store()
    record = SessionRecord(SessionId.new(), 1, 1)

    async def use() -> SessionRecord:
        async with store:
            await store.save(record)
            return await store.load(record.session_id)

    assert asyncio.run(use()) == record
    assert (rows(other_alias), rows("default")) == (1, 0)
    assert store.sync.using == other_alias


def test_the_api_reads_and_writes_the_configured_database(other_alias, api):
    sid = SessionId.new()
    assert (
        api.put(f"/api/sessions/{sid}/", {"agent_id": 4, "started_at_ns": "4"}, format="json").status_code
        == 201
    )
    assert (rows(other_alias), rows("default")) == (1, 0)
    assert api.get(f"/api/sessions/{sid}/").json()["agent_id"] in (4, "4")
    assert [item["session_id"] for item in api.get("/api/sessions/").json()["results"]] == [str(sid)]
    assert api.delete(f"/api/sessions/{sid}/").status_code == 204
    assert rows(other_alias) == 0


def test_purge_sessions_defaults_to_the_configured_database(other_alias):
    for alias in (other_alias, "default"):
        ExecutionSession.objects.using(alias).create(session_id=SessionId.new(), agent_id=1, started_at_ns=5)
    call_command("purge_sessions", "--before", "10", "--no-progress", verbosity=0)
    assert (rows(other_alias), rows("default")) == (0, 1)
    call_command("purge_sessions", "--before", "10", "--database", "default", "--no-progress", verbosity=0)
    assert rows("default") == 0


def test_an_auth_change_on_another_alias_retires_answers_when_that_alias_commits(other_database):
    """The signal's own alias decides which commit to wait for (not the default database's)."""
    from django.core.cache import caches
    from django.db import transaction

    from sessions_app.api import auth_cache
    from sessions_app.models import AgentKey

    cache = caches["default"]
    cache.set(auth_cache.GENERATION_KEY, "before", None)
    with transaction.atomic(using=other_database):
        key = AgentKey(name="elsewhere", agent_ids=[1], scopes=["read"])
        AgentKey.objects.assign_key(key)
        key.save(using=other_database)
        # The default database is in autocommit: waiting on its commit would retire them now,
        # before the change on the other alias is visible.
        assert cache.get(auth_cache.GENERATION_KEY) == "before"
    assert cache.get(auth_cache.GENERATION_KEY) != "before"
