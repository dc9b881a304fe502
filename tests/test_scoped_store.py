"""A store scoped to agents (``for_agents``): row-level security's rule, in the store's own SQL.

Reads see another agent's session as absent, deletes leave it alone, and a
write that would store or overwrite another agent's session raises
``OutOfScope`` with nothing written. Every test runs on the async store's
native path, its portable path (Django's cursor through sync_to_async) and
the sync store, on whichever database ``DATABASE_URL`` selects.
"""

from __future__ import annotations

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.db import connections

from sessions_app.storage import (
    ConflictError,
    DjangoSessionStore,
    NotFound,
    SessionId,
    SessionRecord,
    assert_session_store_conformance,
)
from sessions_app.storage.errors import OutOfScope
from sessions_app.storage.types import AGENT_ID_MAX

MINE, ALSO_MINE, THEIRS = 42, 43, 7


class SyncAsAsync:
    """The sync store behind the async store's names, so one test body checks both."""

    def __init__(self, store):
        self.store = store

    def __getattr__(self, name):
        return sync_to_async(getattr(self.store, name))


@pytest.fixture(params=["native", "portable", "sync"])
def stores(request, transactional_db):
    """``(scoped, operator)``: a store scoped to agents 42 and 43, and the unscoped one beside it."""
    operator = DjangoSessionStore(native_async=request.param == "native")
    scoped = operator.for_agents([MINE, ALSO_MINE])
    if request.param == "sync":
        return SyncAsAsync(scoped.sync), operator
    return scoped, operator


def record(agent: int, start: int = 1) -> SessionRecord:
    return SessionRecord(SessionId.new(), agent, start)


async def test_a_scoped_store_meets_the_contract_for_its_own_agents(transactional_db):
    # The routine's second save mirrors the agent id: both are the store's own.
    store = DjangoSessionStore().for_agents([MINE, AGENT_ID_MAX - MINE])
    await assert_session_store_conformance(store, record(MINE, 2**64 - 1))
    sync_store = SyncAsAsync(
        DjangoSessionStore(native_async=False).sync.for_agents([MINE, AGENT_ID_MAX - MINE])
    )
    await assert_session_store_conformance(sync_store, record(MINE, 5))


async def test_another_agents_session_reads_as_absent(stores):
    scoped, operator = stores
    theirs, mine = record(THEIRS), record(MINE)
    await operator.save_many([theirs, mine])
    with pytest.raises(NotFound):
        await scoped.load(theirs.session_id)
    assert await scoped.load(mine.session_id) == mine
    assert await scoped.load_many([theirs.session_id, mine.session_id]) == {mine.session_id: mine}


async def test_deleting_another_agents_session_leaves_it(stores):
    scoped, operator = stores
    theirs, mine = record(THEIRS), record(ALSO_MINE)
    await operator.save_many([theirs, mine])
    await scoped.delete(theirs.session_id)
    assert await operator.load(theirs.session_id) == theirs
    await scoped.delete_many([theirs.session_id, mine.session_id])
    assert await operator.load_many([theirs.session_id, mine.session_id]) == {theirs.session_id: theirs}


def test_deleted_count_counts_only_own_sessions(transactional_db):
    operator = DjangoSessionStore().sync
    theirs, mine = record(THEIRS), record(MINE)
    operator.save_many([theirs, mine])
    scoped = operator.for_agents([MINE])
    assert scoped.delete_many([theirs.session_id, mine.session_id, SessionId.new()]) == 1
    assert operator.load(theirs.session_id) == theirs


async def test_writing_for_another_agent_is_refused_and_writes_nothing(stores):
    scoped, operator = stores
    foreign = record(THEIRS)
    for write in (scoped.save, scoped.upsert):
        with pytest.raises(OutOfScope):
            await write(foreign)
    with pytest.raises(OutOfScope):
        await scoped.save_many([record(MINE), foreign])
    assert await operator.load_many([foreign.session_id]) == {}


async def test_overwriting_another_agents_session_is_refused_and_changes_nothing(stores):
    scoped, operator = stores
    theirs = record(THEIRS, start=5)
    await operator.save(theirs)
    takeover = SessionRecord(theirs.session_id, MINE, 6)
    for write in (scoped.save, scoped.upsert):
        with pytest.raises(OutOfScope) as refused:
            await write(takeover)
        assert refused.value.session_ids == (bytes(theirs.session_id),)
    assert await operator.load(theirs.session_id) == theirs


async def test_a_batch_touching_another_agents_session_is_refused_whole(stores):
    scoped, operator = stores
    theirs, mine_before = record(THEIRS, start=5), record(MINE, start=5)
    await operator.save_many([theirs, mine_before])
    fresh = record(MINE, start=9)
    batch = [SessionRecord(mine_before.session_id, MINE, 9), fresh, SessionRecord(theirs.session_id, MINE, 9)]
    with pytest.raises(OutOfScope) as refused:
        await scoped.save_many(batch)
    assert refused.value.session_ids == (bytes(theirs.session_id),)
    stored = await operator.load_many([theirs.session_id, mine_before.session_id, fresh.session_id])
    assert stored == {theirs.session_id: theirs, mine_before.session_id: mine_before}


async def test_upsert_reports_created_then_replaced_within_scope(stores):
    scoped, operator = stores
    mine = record(MINE)
    assert await scoped.upsert(mine) is True
    moved = SessionRecord(mine.session_id, ALSO_MINE, 3)
    assert await scoped.upsert(moved) is False
    assert await operator.load(mine.session_id) == moved


def test_insert_of_an_existing_id_is_a_conflict_whoever_owns_it(transactional_db):
    operator = DjangoSessionStore().sync
    theirs = record(THEIRS)
    operator.save(theirs)
    scoped = operator.for_agents([MINE])
    with pytest.raises(ConflictError) as caught:
        scoped.insert(SessionRecord(theirs.session_id, MINE, 1))
    assert type(caught.value) is not OutOfScope  # uniqueness is not hidden, as under RLS
    with pytest.raises(OutOfScope):
        scoped.insert(record(THEIRS))


def test_scopes_are_checked_when_made(transactional_db):
    store = DjangoSessionStore()
    with pytest.raises(ValueError, match=r"agent_ids must be an integer in 0\.\.9223372036854775807"):
        store.for_agents([-1])
    with pytest.raises(ValueError, match="agent_ids"):
        store.for_agents([True])
    with pytest.raises(TypeError):
        store.for_agents("42")
    assert store.for_agents([43, 42, 42]).agents == (42, 43)
    assert store.agents is None  # the original is not changed


async def test_a_scoped_store_does_not_purge(transactional_db):
    with pytest.raises(OutOfScope):
        await DjangoSessionStore().for_agents([MINE]).purge_before(2**64 - 1)


def test_two_keys_racing_on_one_id_leave_it_under_the_agent_that_wrote_it(transactional_db):
    """Writers scoped to different agents save the same fresh ids at once, on real connections.

    Whoever comes first owns the id; every other write of it is refused.
    The stored agent is always one whose write was acknowledged, and each
    acknowledged write of the losing agent would be a breach.
    """
    vendor = connections["default"].vendor
    rounds = 30 if vendor != "sqlite" else 15
    ids = [SessionId.new() for _ in range(rounds)]
    acknowledged: dict[int, set[SessionId]] = {1: set(), 2: set()}
    refused: dict[int, int] = {1: 0, 2: 0}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def outcome(agent: int, session_id: SessionId, refusal: BaseException | None) -> None:
        if isinstance(refusal, OutOfScope):
            refused[agent] += 1
        elif refusal is None:
            acknowledged[agent].add(session_id)
        else:
            errors.append(refusal)

    async def write_async(store: DjangoSessionStore, agent: int) -> None:
        for session_id in ids:
            try:
                await store.upsert(SessionRecord(session_id, agent, agent))
            except BaseException as exc:
                outcome(agent, session_id, exc)
            else:
                outcome(agent, session_id, None)
        await store.aclose()

    def writer(agent: int, kind: str) -> None:
        store = DjangoSessionStore().for_agents([agent])
        try:
            barrier.wait(10)
            if kind == "async":
                asyncio.run(write_async(store, agent))
                return
            for session_id in ids:
                try:
                    store.sync.upsert(SessionRecord(session_id, agent, agent))
                except BaseException as exc:
                    outcome(agent, session_id, exc)
                else:
                    outcome(agent, session_id, None)
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=writer, args=(agent, kind)) for agent in (1, 2) for kind in ("sync", "async")
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
        assert not thread.is_alive(), "a writer hung"
    assert not errors, errors
    stored = DjangoSessionStore().sync.load_many(ids)
    assert set(stored) == set(ids)
    for session_id, rec in stored.items():
        other = 2 if rec.agent_id == 1 else 1
        assert session_id in acknowledged[rec.agent_id]
        assert session_id not in acknowledged[other], f"{session_id} was written by both agents"
    # Each id: the winning agent's two writes acknowledged, the loser's two refused.
    assert refused[1] + refused[2] == 2 * rounds


def test_two_keys_racing_with_overlapping_batches_never_both_win(transactional_db):
    """Batches of two agents that share one id, saved at once: all or nothing, and never both.

    Whoever wins owns its whole batch, the shared id included; the other's
    batch is refused whole (its own ids stay absent). The guard runs in the
    batch's transaction, under the locks the upserts took.
    """
    rounds = 20 if connections["default"].vendor != "sqlite" else 10
    errors: list[BaseException] = []
    outcomes: list[tuple[list[SessionId], dict[int, bool]]] = []

    def save(agent: int, batch: list[SessionId], won: dict[int, bool], barrier: threading.Barrier) -> None:
        store = DjangoSessionStore().for_agents([agent]).sync
        try:
            barrier.wait(10)
            store.save_many([SessionRecord(sid, agent, agent) for sid in batch])
            won[agent] = True
        except OutOfScope:
            won[agent] = False
        except BaseException as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    for _ in range(rounds):
        ids = [SessionId.new() for _ in range(5)]
        won: dict[int, bool] = {}
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=save, args=(1, ids[:3], won, barrier)),
            threading.Thread(target=save, args=(2, ids[2:], won, barrier)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
            assert not thread.is_alive(), "a batch hung"
        outcomes.append((ids, won))
    assert not errors, errors
    operator = DjangoSessionStore().sync
    for ids, won in outcomes:
        assert sorted(won) == [1, 2] and won[1] != won[2], won  # exactly one batch won
        winner, batch = (1, ids[:3]) if won[1] else (2, ids[2:])
        stored = operator.load_many(ids)
        assert {sid: rec.agent_id for sid, rec in stored.items()} == dict.fromkeys(batch, winner)
