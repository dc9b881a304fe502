"""``assert_session_store_conformance``: the one routine every store must pass."""

from __future__ import annotations

from .base import SessionStore
from .errors import NotFound
from .types import AGENT_ID_MAX, STARTED_AT_NS_MAX, SessionRecord


async def assert_session_store_conformance(store: SessionStore, record: SessionRecord) -> None:
    """Check ``store`` against the contract, using ``record``'s id; raise ``AssertionError`` on a breach.

    Runs, in order: save then load returns an equal record; saving again with
    other fields overwrites, and load returns the new values; delete removes
    it, after which load raises ``NotFound``; a second delete of the absent
    id still succeeds. The id is left absent afterwards.

    Run it on your own store in your tests::

        await assert_session_store_conformance(MyStore(), SessionRecord(SessionId.new(), 7, 1))
    """
    await store.delete(record.session_id)

    await store.save(record)
    loaded = await store.load(record.session_id)
    assert loaded == record, f"load after save returned {loaded!r}, expected {record!r}"

    # Both maxima are odd, so the mirror image differs in every field.
    replacement = SessionRecord(
        record.session_id,
        AGENT_ID_MAX - record.agent_id,
        STARTED_AT_NS_MAX - record.started_at_ns,
    )
    await store.save(replacement)
    loaded = await store.load(record.session_id)
    assert loaded == replacement, (
        f"save did not overwrite: load returned {loaded!r}, expected {replacement!r}"
    )

    await store.delete(record.session_id)
    try:
        gone = await store.load(record.session_id)
    except NotFound:
        pass
    else:
        raise AssertionError(f"load after delete returned {gone!r}, expected NotFound")

    await store.delete(record.session_id)  # idempotent: absent is fine
