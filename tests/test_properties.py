"""Property-based tests (hypothesis) over the whole input space."""

import asyncio
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sessions_app.models import ExecutionSession
from sessions_app.storage import DjangoSessionStore, SessionId, SessionRecord
from sessions_app.storage.db import SyncDjangoSessionStore

AGENT_IDS = st.integers(min_value=0, max_value=2**63 - 1)
STARTS = st.integers(min_value=0, max_value=2**64 - 1)
RAW_IDS = st.binary(min_size=16, max_size=16)
RECORDS = st.builds(SessionRecord, RAW_IDS.map(SessionId), AGENT_IDS, STARTS)
DB_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
HEX = "0123456789abcdefABCDEF"


def mutated_id_texts() -> st.SearchStrategy[str]:
    """Valid id texts (UUID form or 32 hex digits, any case), some mutated by one edit.

    Random text almost never parses, so a test drawing it would rarely run
    its success branch; a valid text, sometimes broken by a single change,
    exercises both branches near the boundary.
    """
    valid = st.builds(
        lambda raw, dashed, upper: (str(raw.uuid) if dashed else raw.hex()).upper() if upper else
        (str(raw.uuid) if dashed else raw.hex()),
        RAW_IDS.map(SessionId), st.booleans(), st.booleans(),
    )  # fmt: skip

    @st.composite
    def mutated(draw: st.DrawFn) -> str:
        text = draw(valid)
        position = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["none", "insert", "delete", "replace"]))
        char = draw(st.characters(codec="utf-8"))
        if edit == "insert":
            return text[:position] + char + text[position:]
        if edit == "delete" and position < len(text):
            return text[:position] + text[position + 1 :]
        if edit == "replace" and position < len(text):
            return text[:position] + char + text[position + 1 :]
        return text

    return mutated()


@given(mutated_id_texts())
def test_parse_of_near_valid_text_returns_an_id_that_prints_back_or_raises_value_error(text):
    try:
        sid = SessionId.parse(text)
    except ValueError as exc:
        assert "must be a UUID" in str(exc)
        return
    assert text.replace("-", "").lower() == sid.hex()
    assert SessionId.parse(str(sid)) == sid


@given(mutated_id_texts())
def test_mutated_id_texts_reach_both_branches(text):
    """Guards the strategy itself: both outcomes are drawn (hypothesis.event reports the split)."""
    from hypothesis import event

    try:
        SessionId.parse(text)
    except ValueError:
        event("refused")
    else:
        event("parsed")


@given(st.text(alphabet=HEX, min_size=32, max_size=32))
def test_any_32_hex_digits_parse(text):
    assert SessionId.parse(text).hex() == text.lower()


@given(st.binary(max_size=40))
def test_bytes_of_any_length_are_accepted_exactly_when_sixteen(raw):
    if len(raw) == 16:
        assert SessionId(raw).as_bytes() == raw
    else:
        with pytest.raises(ValueError, match="exactly 16 bytes"):
            SessionId(raw)


@given(st.integers(min_value=-(2**70), max_value=2**70), st.integers(min_value=-(2**70), max_value=2**70))
def test_records_accept_exactly_the_ranges(agent_id, start):
    valid = 0 <= agent_id <= 2**63 - 1 and 0 <= start <= 2**64 - 1
    try:
        record = SessionRecord(SessionId(b"\x00" * 16), agent_id, start)
    except ValueError as exc:
        assert not valid
        assert ("agent_id" in str(exc)) or ("started_at_ns" in str(exc))
    else:
        assert valid
        assert (record.agent_id, record.started_at_ns) == (agent_id, start)


@given(st.one_of(st.floats(), st.text(string.digits, max_size=5), st.booleans(), st.none()))
def test_non_integers_never_make_a_record(value):
    with pytest.raises((TypeError, ValueError)):
        SessionRecord(SessionId(b"\x00" * 16), value, 0)


@pytest.mark.django_db
@DB_SETTINGS
@given(RECORDS)
def test_the_sync_store_round_trips_any_record(record):
    store = SyncDjangoSessionStore()
    store.save(record)
    assert store.load(record.session_id) == record
    store.delete(record.session_id)


@pytest.mark.django_db(transaction=True)
@DB_SETTINGS
@given(st.lists(RECORDS, min_size=1, max_size=30, unique_by=lambda r: r.session_id))
def test_the_async_store_round_trips_any_records_and_sql_orders_them_as_python_does(records):
    async def scenario():
        store = DjangoSessionStore()
        try:
            for record in records:
                await store.save(record)
            loaded = [await store.load(record.session_id) for record in records]
            many = await store.load_many([record.session_id for record in records])
        finally:
            await store.aclose()
        return loaded, many

    loaded, many = asyncio.run(scenario())
    assert loaded == records
    assert many == {record.session_id: record for record in records}
    ids = [record.session_id for record in records]
    in_sql_order = list(
        ExecutionSession.objects.filter(pk__in=ids)
        .order_by("started_at_ns", "session_id")
        .values_list("started_at_ns", flat=True)
    )
    assert in_sql_order == sorted(record.started_at_ns for record in records)
    pivot = records[0].started_at_ns
    above = ExecutionSession.objects.filter(pk__in=ids, started_at_ns__gt=pivot).count()
    assert above == sum(1 for record in records if record.started_at_ns > pivot)
    ExecutionSession.objects.filter(pk__in=ids).delete()


@given(st.integers(min_value=0, max_value=2**66))
@example(2**64 - 1)
@example(2**64)
@example(2**64 - 10)
@example(18_446_744_073_709_551_619)
@example(10**19)
@example(10**19 - 1)
def test_the_schema_pattern_for_started_at_ns_matches_exactly_the_accepted_values(value):
    import re

    from sessions_app.api.fields import decimal_at_most

    pattern = re.compile(decimal_at_most(2**64 - 1))
    assert bool(pattern.match(str(value))) is (value <= 2**64 - 1)
    assert bool(pattern.match(str(value).zfill(20))) is (value <= 2**64 - 1)


@given(STARTS)
@example(0)
@example(2**64 - 1)
@example(86_400 * 10**9 - 1)
@example(1_764_067_200_123_456_789)
def test_started_at_is_the_utc_datetime_of_the_nanoseconds_truncated_to_microseconds(start):
    from datetime import UTC, datetime, timedelta

    from sessions_app.api.serializers import ns_to_iso8601

    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=start // 1000)
    assert ns_to_iso8601(start) == moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
