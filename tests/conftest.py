"""Shared fixtures. The database under test is whatever ``DATABASE_URL`` selects (SQLite by default)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from sessions_app.storage import DjangoSessionStore, InMemorySessionStore


def pytest_report_header(config: pytest.Config) -> str:
    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return f"sessions_app database under test: {engine}"


@pytest.fixture(scope="session", autouse=True)
def _close_worker_thread_connections(django_db_setup):
    """Close the connections that ``sync_to_async`` opened in its worker thread.

    The async tests run their store calls in asgiref's single worker thread,
    which keeps its own connection; PostgreSQL refuses to drop the test
    database while it is open.
    """
    yield
    asyncio.run(sync_to_async(connections.close_all)())


@pytest.fixture
def django_store(transactional_db) -> DjangoSessionStore:
    return DjangoSessionStore()


@pytest.fixture
def memory_store() -> InMemorySessionStore:
    return InMemorySessionStore()


@pytest.fixture(params=["memory", "django"])
def store(request, transactional_db):
    """Each contract test runs once per store.

    Both ask for ``transactional_db``: the Django store's queries run in
    asgiref's worker thread, outside any test transaction.
    """
    return request.getfixturevalue(f"{request.param}_store")


@pytest.fixture
def vendor() -> str:
    return connections["default"].vendor
