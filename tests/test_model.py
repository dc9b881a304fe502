"""``ExecutionSession``: binary ids and full-range unsigned start times in a real database."""

import io

import pytest
from django.core.exceptions import ValidationError
from django.core.management import call_command
from django.db import connection, transaction

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

STARTS = [0, 1, 2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 2, 2**64 - 1]


def make(start: int, agent: int = 1, raw: bytes | None = None) -> ExecutionSession:
    return ExecutionSession.objects.create(
        session_id=raw if raw is not None else SessionId.new(), agent_id=agent, started_at_ns=start
    )


def test_session_id_is_a_binary_column():
    field = ExecutionSession._meta.get_field("session_id")
    expected = {"postgresql": "bytea", "sqlite": "BLOB", "mysql": "binary(16)"}[connection.vendor]
    assert field.db_type(connection) == expected
    obj = make(5, raw=b"\x00" * 16)
    with connection.cursor() as cursor:
        cursor.execute("SELECT session_id FROM sessions_app_executionsession WHERE agent_id = 1")
        (stored,) = cursor.fetchone()
    # The driver hands back binary, not text: the column really holds 16 raw bytes.
    assert isinstance(stored, (bytes, bytearray, memoryview))
    assert bytes(stored) == b"\x00" * 16 == obj.pk


@pytest.mark.parametrize("raw", [b"\x00" * 16, b"\xff" * 16, bytes(range(16)), b"/_:" * 5 + b"\x00"])
def test_any_sixteen_bytes_round_trip_and_read_as_bytes(raw):
    make(1, raw=raw)
    loaded = ExecutionSession.objects.get(session_id=raw)
    assert isinstance(loaded.session_id, bytes)
    assert loaded.session_id == raw
    assert type(loaded.session_id) is SessionId


def test_lookups_accept_bytes_session_id_and_uuid_text():
    sid = SessionId.new()
    make(1, raw=sid.as_bytes())
    assert ExecutionSession.objects.get(session_id=sid).pk == sid
    assert ExecutionSession.objects.get(session_id=sid.as_bytes()).pk == sid
    assert ExecutionSession.objects.get(session_id=str(sid)).pk == sid
    assert ExecutionSession.objects.filter(session_id__in=[sid, SessionId.new()]).count() == 1


@pytest.mark.parametrize("start", STARTS)
def test_every_start_time_round_trips_exactly(start):
    obj = make(start)
    assert ExecutionSession.objects.get(pk=obj.pk).started_at_ns == start
    assert ExecutionSession.objects.values_list("started_at_ns", flat=True).get(pk=obj.pk) == start


def test_ordering_by_start_matches_python_across_the_whole_range():
    for start in reversed(STARTS):
        make(start)
    assert (
        list(ExecutionSession.objects.order_by("started_at_ns").values_list("started_at_ns", flat=True))
        == STARTS
    )
    descending = ExecutionSession.objects.order_by("-started_at_ns").values_list("started_at_ns", flat=True)
    assert list(descending) == sorted(STARTS, reverse=True)


@pytest.mark.parametrize("pivot", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_range_filters_are_correct_on_both_sides_of_two_to_the_63(pivot):
    for start in STARTS:
        make(start)

    def starts(**lookup):
        return sorted(ExecutionSession.objects.filter(**lookup).values_list("started_at_ns", flat=True))

    assert starts(started_at_ns__gt=pivot) == [s for s in STARTS if s > pivot]
    assert starts(started_at_ns__gte=pivot) == [s for s in STARTS if s >= pivot]
    assert starts(started_at_ns__lt=pivot) == [s for s in STARTS if s < pivot]
    assert starts(started_at_ns__lte=pivot) == [s for s in STARTS if s <= pivot]
    assert starts(started_at_ns=pivot) == [pivot]
    assert starts(started_at_ns__range=(pivot, 2**64 - 1)) == [s for s in STARTS if s >= pivot]


def test_comparisons_with_values_outside_the_range_answer_without_error():
    for start in STARTS:
        make(start)
    everything = len(STARTS)
    assert ExecutionSession.objects.filter(started_at_ns__gt=-1).count() == everything
    assert ExecutionSession.objects.filter(started_at_ns__lt=2**64).count() == everything
    assert ExecutionSession.objects.filter(started_at_ns__gt=2**64).count() == 0
    assert ExecutionSession.objects.filter(started_at_ns=-5).count() == 0


def test_max_aggregate_sees_real_values():
    from django.db.models import Max, Min

    for start in STARTS:
        make(start)
    assert ExecutionSession.objects.aggregate(lo=Min("started_at_ns"), hi=Max("started_at_ns")) == {
        "lo": 0,
        "hi": 2**64 - 1,
    }


@pytest.mark.parametrize(
    ("fields", "field_name", "message"),
    [
        ({"session_id": b"\x00" * 15}, "session_id", "16 bytes, got 15"),
        ({"session_id": b"\x00" * 17}, "session_id", "16 bytes, got 17"),
        ({"agent_id": -1}, "agent_id", "greater than or equal to 0"),
        ({"agent_id": 2**63}, "agent_id", "less than or equal to 9223372036854775807"),
        ({"started_at_ns": -1}, "started_at_ns", "greater than or equal to 0"),
        ({"started_at_ns": 2**64}, "started_at_ns", "less than or equal to 18446744073709551615"),
    ],
)
def test_full_clean_rejects_bad_values_naming_the_field_and_range(fields, field_name, message):
    obj = ExecutionSession(**{"session_id": SessionId.new(), "agent_id": 1, "started_at_ns": 1, **fields})
    with pytest.raises(ValidationError) as caught:
        obj.full_clean()
    assert list(caught.value.message_dict) == [field_name]
    assert message in " ".join(caught.value.message_dict[field_name])


def test_full_clean_accepts_the_edges():
    for agent, start in [(0, 0), (2**63 - 1, 2**64 - 1)]:
        ExecutionSession(session_id=SessionId.new(), agent_id=agent, started_at_ns=start).full_clean()


def test_saving_an_out_of_range_start_without_full_clean_raises_and_writes_nothing():
    with (
        pytest.raises(ValueError, match=r"started_at_ns must be an integer in 0\.\.18446744073709551615"),
        transaction.atomic(),
    ):
        make(2**64)
    assert ExecutionSession.objects.count() == 0


def test_str_is_uuid_text_and_default_id_is_fresh():
    a, b = ExecutionSession(agent_id=1, started_at_ns=1), ExecutionSession(agent_id=1, started_at_ns=1)
    assert a.pk != b.pk
    assert str(a) == str(a.pk) == str(SessionId(a.pk))


def test_the_database_has_the_list_and_agent_indexes_and_serves_the_order_from_them():
    from django.db import connection

    table = ExecutionSession._meta.db_table
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    indexed = {tuple(c["columns"]) for c in constraints.values() if c["index"] and not c["primary_key"]}
    assert ("agent_id", "started_at_ns", "session_id") in indexed
    assert ("started_at_ns", "session_id") in indexed
    if connection.vendor == "postgresql":
        agent_page = ExecutionSession.objects.filter(agent_id=7).order_by("-started_at_ns", "-session_id")[
            :100
        ]
        with connection.cursor() as cursor:
            # A tiny table would not need an index at all; and once earlier
            # tests' rows got the table analysed (any order, under
            # pytest-xdist), a bitmap scan plus a sort can look as cheap.
            cursor.execute("SET enable_seqscan = off")
            cursor.execute("SET enable_bitmapscan = off")
            try:
                plan = agent_page.explain()
            finally:
                cursor.execute("RESET enable_seqscan")
                cursor.execute("RESET enable_bitmapscan")
        assert "sessions_app_agent_idx" in plan and "Sort" not in plan, plan


def test_migrations_are_complete():
    out = io.StringIO()
    call_command("makemigrations", "sessions_app", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()
