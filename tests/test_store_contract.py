"""The storage contract, on every store: conformance, edges, bad input, concurrency, batches."""

import asyncio

import pytest

from sessions_app.storage import (
    NotFound,
    SessionId,
    SessionRecord,
    StorageError,
    assert_session_store_conformance,
)

EDGE_IDS = [b"\x00" * 16, b"\xff" * 16, b"/_:\x00\xff" * 3 + b"\x2f"]
EDGE_STARTS = [0, 1, 2**63 - 1, 2**63, 2**64 - 2, 2**64 - 1]
EDGE_AGENTS = [0, 1, 2**63 - 1]


async def test_conformance(store):
    await assert_session_store_conformance(
        store, SessionRecord(SessionId.new(), 42, 1_764_067_200_123_456_789)
    )


@pytest.mark.parametrize("raw_id", EDGE_IDS, ids=["zeros", "ones", "separators"])
async def test_conformance_with_awkward_ids(store, raw_id):
    await assert_session_store_conformance(store, SessionRecord(SessionId(raw_id), 0, 2**64 - 1))


async def test_edge_values_round_trip_exactly(store):
    records = [SessionRecord(SessionId.new(), agent, start) for agent in EDGE_AGENTS for start in EDGE_STARTS]
    for record in records:
        await store.save(record)
    for record in records:
        assert await store.load(record.session_id) == record


async def test_load_of_absent_id_is_not_found_and_names_the_id(store):
    sid = SessionId.new()
    with pytest.raises(StorageError) as caught:  # what a caller catching the closed set sees
        await store.load(sid)
    assert type(caught.value) is NotFound
    assert str(sid) in str(caught.value)


async def test_load_and_delete_accept_raw_bytes(store):
    record = SessionRecord(SessionId.new(), 5, 6)
    await store.save(record)
    assert await store.load(record.session_id.as_bytes()) == record
    await store.delete(record.session_id.as_bytes())
    with pytest.raises(NotFound):
        await store.load(record.session_id)


async def test_delete_removes_only_that_id_and_is_idempotent(store):
    doomed, kept = SessionRecord(SessionId.new(), 1, 1), SessionRecord(SessionId.new(), 2, 2)
    await store.save_many([doomed, kept])
    await store.delete(doomed.session_id)
    with pytest.raises(NotFound):
        await store.load(doomed.session_id)
    await store.delete(doomed.session_id)  # absent now: still a success
    await store.delete(SessionId.new())  # never existed: a success
    assert await store.load(kept.session_id) == kept


@pytest.mark.parametrize(
    ("call", "argument", "error"),
    [
        ("save", (b"\x00" * 16, 1, 2), TypeError),  # a tuple, not a record
        ("save", None, TypeError),
        ("load", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0", TypeError),
        ("load", b"\x00" * 15, ValueError),
        ("delete", b"\x00" * 17, ValueError),
        ("delete", 123, TypeError),
    ],
)
async def test_bad_input_raises_and_writes_nothing(store, call, argument, error):
    kept = SessionRecord(SessionId.new(), 1, 1)
    await store.save(kept)
    with pytest.raises(error):
        await getattr(store, call)(argument)
    assert await store.load(kept.session_id) == kept
    assert await store.load_many([kept.session_id]) == {kept.session_id: kept}


def statements_overlapped(store) -> bool | None:
    """Whether the last calls ran at once on several connections; None where a path cannot overlap.

    Which paths overlap: PostgreSQL's native path runs up to POOL_SIZE
    statements at once, on as many connections. The SQLite thread and the
    sync_to_async path run one statement at a time by design (their calls
    overlap only as awaiting tasks; tests/test_concurrency.py overlaps them
    from four OS processes), and the memory store's calls never await.
    """
    if getattr(store, "path_name", None) != "PostgresPath":
        return None
    return store.path.pool_for_running_loop().open_count > 1


async def test_fifty_concurrent_saves_of_one_id_all_succeed_and_leave_one_of_them(store):
    sid = SessionId.new()
    candidates = [SessionRecord(sid, agent, 1000 + agent) for agent in range(50)]
    # A read-then-write save would raise a conflict here when calls overlap;
    # an upsert never does.
    outcomes = await asyncio.gather(*(store.save(record) for record in candidates), return_exceptions=True)
    assert [outcome for outcome in outcomes if outcome is not None] == []
    assert await store.load(sid) in candidates
    assert statements_overlapped(store) in (True, None)


async def test_five_hundred_concurrent_saves_of_distinct_ids_all_land(store):
    records = [SessionRecord(SessionId.new(), n, n) for n in range(500)]
    await asyncio.gather(*(store.save(record) for record in records))
    loaded = await asyncio.gather(*(store.load(record.session_id) for record in records))
    assert loaded == records
    assert statements_overlapped(store) in (True, None)


async def test_save_many_then_load_many_returns_only_present_ids(store):
    records = [SessionRecord(SessionId.new(), n, 2**64 - 1 - n) for n in range(1200)]
    await store.save_many(records)
    absent = SessionId.new()
    found = await store.load_many([r.session_id for r in records] + [absent])
    assert found == {r.session_id: r for r in records}
    assert absent not in found


async def test_save_many_with_repeated_ids_keeps_the_last(store):
    sid = SessionId.new()
    await store.save_many([SessionRecord(sid, 1, 1), SessionRecord(sid, 2, 2)])
    assert await store.load(sid) == SessionRecord(sid, 2, 2)


async def test_delete_many_removes_listed_ids_and_tolerates_absent_ones(store):
    records = [SessionRecord(SessionId.new(), n, n) for n in range(10)]
    await store.save_many(records)
    await store.delete_many([r.session_id for r in records[:7]] + [SessionId.new()])
    remaining = await store.load_many([r.session_id for r in records])
    assert set(remaining) == {r.session_id for r in records[7:]}


async def test_empty_batches_are_no_ops(store):
    await store.save_many([])
    await store.delete_many([])
    assert await store.load_many([]) == {}


async def test_save_many_with_a_bad_record_writes_nothing(store):
    good = SessionRecord(SessionId.new(), 1, 1)
    with pytest.raises(TypeError):
        await store.save_many([good, "not a record"])
    assert await store.load_many([good.session_id]) == {}


@pytest.mark.parametrize("native_async", [True, False], ids=["native path", "sync_to_async"])
async def test_upsert_tells_created_from_replaced(transactional_db, native_async):
    from sessions_app.storage import DjangoSessionStore

    store = DjangoSessionStore(native_async=native_async)
    record = SessionRecord(SessionId.new(), 1, 2**64 - 1)
    assert await store.upsert(record) is True
    replaced = SessionRecord(record.session_id, 2, 0)
    assert await store.upsert(replaced) is False
    assert await store.load(record.session_id) == replaced
    with pytest.raises(TypeError):
        await store.upsert("not a record")
