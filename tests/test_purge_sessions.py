"""``manage.py purge_sessions``: cut-offs, batches, dry runs, idempotence, and speed on many rows."""

import contextlib
import io
import time
from collections.abc import Iterator

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from sessions_app.management.commands.purge_sessions import parse_age, parse_moment
from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

NS = 1_000_000_000


def seed(starts):
    """One row per start time (agent 1), in this test's transaction.

    Multi-row INSERTs of prepared values: the slow test's 200,000 rows as
    model instances through ``bulk_create`` took ten times as long as the
    purge it tests. Each value goes through its field's own conversion, as
    the ORM's would.
    """
    fields = [ExecutionSession._meta.get_field(name) for name in ("session_id", "agent_id", "started_at_ns")]
    quote = connection.ops.quote_name
    insert = (
        f"INSERT INTO {quote(ExecutionSession._meta.db_table)} ({', '.join(quote(f.column) for f in fields)})"
        " VALUES "
    )
    session_id, agent_id, started_at_ns = fields
    agent = agent_id.get_db_prep_save(1, connection)
    starts = list(starts)
    with connection.cursor() as cursor:
        for first in range(0, len(starts), 1000):
            batch = starts[first : first + 1000]
            values: list[object] = []
            for start in batch:
                values += (
                    session_id.get_db_prep_save(SessionId.new(), connection),
                    agent,
                    started_at_ns.get_db_prep_save(start, connection),
                )
            cursor.execute(insert + ", ".join(["(%s, %s, %s)"] * len(batch)), values)


def purge(*args) -> str:
    out = io.StringIO()
    call_command("purge_sessions", *args, "--no-progress", stdout=out)
    return out.getvalue()


@contextlib.contextmanager
def deletes_recorded() -> Iterator[list[int]]:
    """The rows each ``DELETE`` the database ran took, in order."""
    taken: list[int] = []

    def record(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE"):
            taken.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(record):
        yield taken


def test_before_deletes_strictly_older_sessions_only():
    seed([0, 10, 2**63, 2**64 - 2, 2**64 - 1])
    output = purge("--before", str(2**64 - 1))
    assert "Purged 4 sessions" in output
    assert list(ExecutionSession.objects.values_list("started_at_ns", flat=True)) == [2**64 - 1]


def test_older_than_keeps_recent_sessions():
    now = time.time_ns()
    seed([now - 40 * 86_400 * NS, now - 31 * 86_400 * NS, now - 29 * 86_400 * NS, now])
    assert "Purged 2 sessions" in purge("--older-than", "30d")
    assert ExecutionSession.objects.count() == 2


def test_dry_run_counts_and_deletes_nothing():
    seed([1, 2, 3])
    assert "Would purge 2 sessions" in purge("--before", "3", "--dry-run")
    assert ExecutionSession.objects.count() == 3


def test_small_batches_delete_everything_and_a_second_run_deletes_nothing():
    seed(range(1000))
    with deletes_recorded() as taken:
        assert "Purged 1000 sessions" in purge("--before", "5000", "--batch-size", "7")
    assert taken == [7] * 142 + [6]  # one DELETE per batch of at most 7; a short one ends it
    assert ExecutionSession.objects.count() == 0
    with deletes_recorded() as taken:
        assert "Purged 0 sessions" in purge("--before", "5000", "--batch-size", "7")
    assert taken == [0]


def test_batches_take_the_oldest_first_and_a_full_last_batch_is_followed_by_an_empty_one():
    seed(range(21))
    remaining: list[list[int]] = []

    def record(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("DELETE"):
            remaining.append(sorted(ExecutionSession.objects.values_list("started_at_ns", flat=True)))
        return result

    with connection.execute_wrapper(record):
        assert "Purged 21 sessions" in purge("--before", "100", "--batch-size", "7")
    assert remaining == [list(range(7, 21)), list(range(14, 21)), [], []]


def test_iso_date_times_are_utc_unless_zoned():
    assert parse_moment("1970-01-01T00:00:01Z") == NS
    assert parse_moment("1970-01-01T00:00:01") == NS
    assert parse_moment("1970-01-01T01:00:01+01:00") == NS
    assert parse_moment("1970-01-01T00:00:00.000002Z") == 2000
    assert parse_moment("123") == 123
    assert parse_age("2w") == 14 * 86_400 * NS


@pytest.mark.parametrize(
    "args",
    [
        ["--before", "yesterday"],
        ["--before", str(2**64)],
        ["--older-than", "30 days"],
        ["--older-than", "-1d"],
        ["--before", "1", "--batch-size", "0"],
    ],
)
def test_bad_arguments_are_clear_errors_and_delete_nothing(args):
    seed([0])
    with pytest.raises(CommandError):
        purge(*args)
    assert ExecutionSession.objects.count() == 1


def test_a_cut_off_is_required():
    with pytest.raises(CommandError):
        purge()


@pytest.mark.slow
def test_purges_a_few_hundred_thousand_rows_in_batches():
    rows = 200_000
    seed(range(rows))
    started = time.perf_counter()
    with deletes_recorded() as taken:
        output = purge("--before", str(rows - 50_000), "--batch-size", "20000")
    elapsed = time.perf_counter() - started
    assert taken == [20_000] * 7 + [10_000]  # in batches of the size asked for
    assert f"Purged {rows - 50_000} sessions" in output
    assert ExecutionSession.objects.count() == 50_000
    assert ExecutionSession.objects.filter(started_at_ns__lt=rows - 50_000).count() == 0
    print(f"purged {rows - 50_000} rows in {elapsed:.2f} s: {output.strip()}")
