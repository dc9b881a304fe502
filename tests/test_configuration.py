"""``SESSIONS_APP`` settings, ``get_session_store()`` and the system checks."""

import pytest
from django.core.checks import run_checks

from sessions_app.conf import app_settings
from sessions_app.storage import (
    CachedSessionStore,
    DjangoSessionStore,
    InMemorySessionStore,
    SessionId,
    SessionRecord,
    get_session_store,
)


@pytest.fixture(scope="module", autouse=True)
def _database_features_read(django_db_setup, django_db_blocker) -> None:
    """Django 6.1's model checks read ``connection.features`` (a query, once per process).

    Read them here, with the database open, so the checks below need no
    database whichever tests ran before them in this process (pytest-xdist
    deals the tests out in another order).
    """
    from django.db import connections

    with django_db_blocker.unblock():
        for alias in connections:
            _ = connections[alias].features.supports_json_field


def check_ids(**kwargs) -> set[str]:
    return {message.id for message in run_checks(**kwargs) if message.id.startswith("sessions_app.")}


@pytest.mark.django_db
def test_with_nothing_set_the_api_pages_by_100_and_the_store_is_the_default_database(settings, api):
    from sessions_app.models import ExecutionSession

    if hasattr(settings, "SESSIONS_APP"):
        del settings.SESSIONS_APP
    ExecutionSession.objects.bulk_create(
        ExecutionSession(session_id=SessionId.new(), agent_id=1, started_at_ns=n) for n in range(101)
    )
    page = api.get("/api/sessions/").json()
    assert len(page["results"]) == 100 and page["next"]
    store = get_session_store()
    assert type(store) is DjangoSessionStore and store.using == "default"


def test_settings_are_read_again_when_they_change(settings):
    settings.SESSIONS_APP = {"PAGE_SIZE": 7}
    assert app_settings.PAGE_SIZE == 7
    settings.SESSIONS_APP = {"PAGE_SIZE": 9}
    assert app_settings.PAGE_SIZE == 9


def test_unknown_setting_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="known"):
        _ = app_settings.PAGE_SIZ


def test_get_session_store_builds_the_configured_store(settings):
    settings.SESSIONS_APP = {"STORE": "sessions_app.storage.InMemorySessionStore"}
    assert isinstance(get_session_store(), InMemorySessionStore)
    settings.SESSIONS_APP = {
        "STORE": "sessions_app.storage.CachedSessionStore",
        "STORE_OPTIONS": {"backing_store": "sessions_app.storage.InMemorySessionStore", "timeout": 5},
    }
    store = get_session_store()
    assert isinstance(store, CachedSessionStore)
    assert isinstance(store.backing_store, InMemorySessionStore)
    assert store.timeout == 5


async def test_the_configured_store_works(settings):
    settings.SESSIONS_APP = {"STORE": "sessions_app.storage.InMemorySessionStore"}
    store = get_session_store()
    record = SessionRecord(SessionId.new(), 1, 1)
    await store.save(record)
    assert await store.load(record.session_id) == record


def test_the_project_passes_every_check(db):
    assert check_ids(databases=["default"]) == set()


def test_missing_dependency_app_is_e001(settings):
    settings.INSTALLED_APPS = [app for app in settings.INSTALLED_APPS if app != "django_filters"]
    assert "sessions_app.E001" in check_ids()


@pytest.mark.parametrize("path", ["no.such.Store", "sessions_app.storage.types.SessionId"])
def test_store_path_that_is_not_a_store_is_e002(settings, path):
    settings.SESSIONS_APP = {"STORE": path}
    assert "sessions_app.E002" in check_ids()


@pytest.mark.parametrize("key", ["CACHE_ALIAS", "AUTH_CACHE_ALIAS"])
def test_unknown_cache_alias_is_e003(settings, key):
    settings.SESSIONS_APP = {key: "nope"}
    assert "sessions_app.E003" in check_ids()


@pytest.mark.parametrize("value", [-1, "30", None, True])
def test_bad_auth_cache_timeout_is_e008(settings, value):
    settings.SESSIONS_APP = {"AUTH_CACHE_TIMEOUT": value}
    assert "sessions_app.E008" in check_ids()


def test_unknown_database_alias_is_e004(settings):
    settings.SESSIONS_APP = {"DATABASE_ALIAS": "nope"}
    assert "sessions_app.E004" in check_ids()


@pytest.mark.parametrize("key", ["PAGE_SIZE", "MAX_BULK"])
@pytest.mark.parametrize("value", [0, -1, "10", True])
def test_bad_page_size_or_bulk_limit_is_e005(settings, key, value):
    settings.SESSIONS_APP = {key: value}
    assert "sessions_app.E005" in check_ids()


@pytest.mark.parametrize("value", [0, -1, "3", None])
def test_bad_health_timeout_is_e009(settings, value):
    settings.SESSIONS_APP = {"HEALTH_TIMEOUT": value}
    assert "sessions_app.E009" in check_ids()


@pytest.mark.parametrize("value", [1, "yes", None])
def test_edge_not_a_bool_is_e010(settings, value):
    settings.SESSIONS_APP = {"EDGE": value}
    assert "sessions_app.E010" in check_ids()
    settings.SESSIONS_APP = {"EDGE": False}
    assert "sessions_app.E010" not in check_ids()


def test_unimportable_permission_class_is_e006(settings):
    settings.SESSIONS_APP = {"PERMISSION_CLASSES": ["no.such.Permission"]}
    assert "sessions_app.E006" in check_ids()


def test_misspelt_key_is_w001(settings):
    settings.SESSIONS_APP = {"PAGE_SIZ": 10}
    assert "sessions_app.W001" in check_ids()


def test_unsupported_database_is_e007(monkeypatch, db):
    from django.db import connections

    monkeypatch.setattr(connections["default"], "vendor", "oracle")
    assert "sessions_app.E007" in check_ids(databases=["default"])


LIFESPAN_PROBE = """
import asyncio, gc, sys
before = gc.get_freeze_count()  # Python 3.12 starts with a few hundred frozen
import aa_project.asgi as entry
from django.urls import get_resolver
from sessions_app.asgi import Plan

frozen_at_import = gc.get_freeze_count() - before
sent = []

async def serve_lifespan():
    messages = asyncio.Queue()
    for kind in ("lifespan.startup", "lifespan.shutdown"):
        messages.put_nowait({"type": kind})

    async def send(message):
        sent.append(message["type"])
        if message["type"] == "lifespan.startup.complete":
            # Between start-up and shutdown, as a server's first request would see it.
            built = entry.application.app._plan  # read before plan() could build one
            urls = (get_resolver(), get_resolver().url_patterns)  # made now unless made before
            tracked = {id(o) for o in gc.get_objects()}
            report.append(gc.get_freeze_count())
            report.append(len(tracked))
            report.append(isinstance(built, Plan) and entry.application.app.plan() is built)
            report.append(id(built) in tracked)
            report.append(any(id(o) in tracked for o in urls))

    await entry.application({"type": "lifespan", "asgi": {"version": "3.0"}}, messages.get, send)

report = []
asyncio.run(serve_lifespan())
print(frozen_at_import, *report, *sent)
"""


def probe_output(probe: str, *unset: str) -> list[str]:
    """What ``probe`` prints, split: a new interpreter on the host project's settings, minus ``unset``."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "aa_project.settings", "PYTHONPATH": str(root)}
    for name in unset:
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=root, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_the_asgi_entry_point_loads_and_freezes_at_start_up_not_at_import():
    """Lifespan start-up loads the URL patterns and the edge's plan, then ``gc.freeze()``."""
    # Either variable would make the edge stand aside: no plan.
    words = probe_output(LIFESPAN_PROBE, "DJANGO_REDIS_URL", "SESSIONS_EDGE")
    at_import, frozen, still_tracked, plan_built, plan_tracked, urls_tracked, *sent = words
    assert int(at_import) == 0  # importing the module (a test, a benchmark) freezes nothing
    assert int(frozen) > 10_000  # Django, DRF, the project's modules, models, URL patterns, the plan
    assert int(still_tracked) < 1_000  # what the start-up call itself made since
    assert plan_built == "True"  # built at start-up, the one the requests use
    assert (plan_tracked, urls_tracked) == ("False", "False")  # both frozen
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


WSGI_PROBE = """
import gc
import aa_project.wsgi
from django.urls import get_resolver
from aa_project.lifespan import load_and_freeze

load_and_freeze()  # what gunicorn's post_worker_init hook would call
urls = (get_resolver(), get_resolver().url_patterns)  # made now unless made before
tracked = {id(o) for o in gc.get_objects()}
print(id(urls[0]) in tracked, id(urls[1]) in tracked, len(tracked))
"""


def test_load_and_freeze_without_an_edge_freezes_the_url_patterns_too():
    """Under WSGI Django imports the URLconf on the first request; ``load_and_freeze`` does it first."""
    resolver_tracked, patterns_tracked, still_tracked = probe_output(WSGI_PROBE)
    assert (resolver_tracked, patterns_tracked) == ("False", "False")
    assert int(still_tracked) < 1_000
