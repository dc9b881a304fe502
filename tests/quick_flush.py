"""A transactional test's database teardown that empties only the tables the test wrote to.

Django's ``TransactionTestCase`` empties every table after each test
(``flush``: one ``TRUNCATE`` of all thirteen on PostgreSQL, which creates
new files for each table and index and syncs them at commit) and then
emits ``post_migrate``, which puts back the content types and permissions
the flush removed: some 30 queries. On PostgreSQL that was about a tenth of
a second a test, a fifth of the suite's time there.

Here, one query finds the tables that hold rows and counts the rows of the
two tables ``post_migrate`` fills; the tables that hold rows are emptied
with ``DELETE`` in one transaction. When the content types or permissions
differ in number from what migrate made (a test added or removed some), or
``post_migrate`` has receivers other than those two, Django's own flush runs
instead, as before. Either way the next test starts from the database
migrate made.
"""

from __future__ import annotations

from typing import Any

from django.db import connections, transaction
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models.signals import post_migrate
from django.test import TransactionTestCase

# Per database alias: the row counts of the tables post_migrate fills, as
# migrate left them (recorded once per test session, tests/conftest.py).
migrated_rows: dict[str, dict[str, int]] = {}
_tables: dict[str, list[str]] = {}


def _filled_by_post_migrate() -> list[str]:
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    return [ContentType._meta.db_table, Permission._meta.db_table]


def _only_known_receivers() -> bool:
    """post_migrate's receivers are the two that fill those tables (and nothing else would be skipped)."""
    import weakref

    from django.contrib.auth.management import create_permissions
    from django.contrib.contenttypes.management import create_contenttypes

    known = {create_permissions, create_contenttypes}
    # Each entry: (lookup key, receiver or a weak reference to it, ...), in Django 5.2 and 6.1.
    receivers = [entry[1] for entry in post_migrate.receivers]
    resolved = [r() if isinstance(r, weakref.ReferenceType) else r for r in receivers]
    return all(receiver in known for receiver in resolved)


def table_rows(connection: BaseDatabaseWrapper) -> dict[str, int]:
    """Every Django table's rows: a count for the tables post_migrate fills, 0 or 1 (any?) for the rest."""
    if connection.alias not in _tables:
        _tables[connection.alias] = sorted(
            connection.introspection.django_table_names(only_existing=True, include_views=False)
        )
    quote = connection.ops.quote_name
    counted = _filled_by_post_migrate()
    parts = [
        f"SELECT '{table}', COUNT(*) FROM {quote(table)}"
        if table in counted
        else f"SELECT '{table}', CASE WHEN EXISTS (SELECT 1 FROM {quote(table)}) THEN 1 ELSE 0 END"
        for table in _tables[connection.alias]
    ]
    if not parts:  # no database set up for this run (its tests need none)
        return {}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(parts))
        return {str(name): int(rows) for name, rows in cursor.fetchall()}


def record_migrated_rows(connection: BaseDatabaseWrapper) -> None:
    """Note what migrate (and post_migrate) left in the test database: call before any test writes."""
    migrated_rows[connection.alias] = {
        table: rows for table, rows in table_rows(connection).items() if table in _filled_by_post_migrate()
    }


def emptied(connection: BaseDatabaseWrapper) -> bool:
    """Empty the tables that hold rows; False (nothing done) when only Django's flush will do."""
    expected = migrated_rows.get(connection.alias)
    if expected is None or not _only_known_receivers():
        return False
    rows = table_rows(connection)
    if any(rows.get(table) != count for table, count in expected.items()):
        return False
    written = [table for table, count in rows.items() if count and table not in expected]
    if not written:
        return True
    if connection.vendor == "postgresql":
        # DELETE, not TRUNCATE (new files for every table and index); the
        # foreign keys Django makes are deferred to the commit, by which
        # time both ends are gone.
        quote = connection.ops.quote_name
        statements = [f"DELETE FROM {quote(table)}" for table in written]
    else:
        # SQLite and MySQL/MariaDB: Django's own statements (DELETE, with
        # MySQL's foreign key checks off around them), for these tables only.
        from django.core.management.color import no_style

        statements = connection.ops.sql_flush(no_style(), written, reset_sequences=False)
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    return True


def install() -> None:
    """Make every TransactionTestCase (pytest-django's transactional_db included) tear down this way."""
    flush_everything = TransactionTestCase._fixture_teardown

    def _fixture_teardown(self: Any) -> None:
        if self.available_apps is not None or self.serialized_rollback:
            flush_everything(self)
            return
        for alias in self._databases_names(include_mirrors=False):
            if not emptied(connections[alias]):
                flush_everything(self)
                return

    TransactionTestCase._fixture_teardown = _fixture_teardown  # type: ignore[method-assign]
