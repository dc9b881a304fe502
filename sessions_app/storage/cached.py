"""``CachedSessionStore``: a read-through, write-through cache in front of another store."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import ParamSpec, TypeVar

from asgiref.sync import sync_to_async
from django.core.cache import BaseCache

from ..caching import answered, cache_for, failed
from .base import SessionStore
from .errors import NotFound
from .types import SessionId, SessionRecord, check_record

logger = logging.getLogger("sessions_app.storage")

T = TypeVar("T")
P = ParamSpec("P")

# What the cache holds for a deleted session: a load that finds it answers
# NotFound, and a concurrent load that read the row just before the delete
# cannot put the record back (it fills with add(), which a tombstone blocks).
TOMBSTONE = "deleted"
# In place of a record that may be older than the backing store's (saves
# overlapped, or the cache refused a write): a miss for loads, which then
# cannot add() an old value they read before the saves; the next save
# overwrites it. A plain delete would let such a load fill the hole.
STALE = "stale"
# Beside each cached record, a count of the saves that cached it: a save that
# sees the count move by more than its own knows another save overlapped it,
# and may have cached an older value last (the cache has no compare-and-set).
SAVES_SUFFIX = ":saves"


class CachedSessionStore(SessionStore):
    """Layers Django's cache over ``backing_store``, as ``cached_db`` does for Django's sessions.

    - ``save``: the backing store first, then the cache (write-through). A
      write the cache refuses drops the cached record instead, and when
      two saves of one id overlap, the cached record is marked stale (loads
      go to the backing store and cannot put back a value they read
      before), so concurrent saves and loads never leave an older record
      cached than the backing store holds (each save costs three cache calls: read the id's save
      count, write, count the save). ``save_many`` writes the cache in one
      call and does not count: overlapping batch and single saves of one id
      may leave either value cached until ``timeout``;
    - ``load``: the cache, else the backing store, then fills the cache with
      ``add()`` so that it never overwrites a newer write or a deletion;
    - ``delete``: the backing store, then a tombstone in the cache.

    With a shared cache (Django's Redis backend) every app server sees the
    same hot records and the same deletions. A deleted session is never
    served, whatever the interleaving of loads and the delete. One race is
    left to the caller: a save and a delete of the *same* id running at the
    same time may leave either outcome in the cache until ``timeout``, the
    runtime never does that (it saves at start and deletes at end).

    The backing store is the source of truth. If the cache fails, each call
    logs a warning and goes to the backing store alone; writes made while
    the cache is down are not in it when it returns, so keep ``timeout``
    short if the cache can lose contact and keep its data. A delete whose
    tombstone the cache refuses (Redis out of memory refuses writes but not
    deletions) removes the cached record instead; only when the cache takes
    neither, it may serve the deleted record until ``timeout``, and the
    store logs an ERROR naming the session.

    Writes that bypass this store (the REST API, the admin) do not reach the
    cache; ``timeout`` bounds how long a load may serve the older value.
    """

    def __init__(
        self,
        backing_store: SessionStore,
        cache_alias: str | None = None,
        timeout: float | None = None,
        key_prefix: str = "sessions_app:session:",
    ) -> None:
        from ..conf import app_settings

        self.backing_store = backing_store
        self.cache_alias = self.cache_alias_for(cache_alias)
        self.timeout = app_settings.CACHE_TIMEOUT if timeout is None else timeout
        self.key_prefix = key_prefix

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.backing_store!r}, cache_alias={self.cache_alias!r})"

    @staticmethod
    def cache_alias_for(cache_alias: str | None) -> str:
        """The cache a store built with ``cache_alias`` uses: it, or ``SESSIONS_APP["CACHE_ALIAS"]``."""
        from ..conf import app_settings

        alias: str = cache_alias or app_settings.CACHE_ALIAS
        return alias

    @property
    def cache(self) -> BaseCache:
        return cache_for(self.cache_alias)

    def key(self, session_id: SessionId) -> str:
        return self.key_prefix + session_id.hex()

    # -- the contract ------------------------------------------------------

    async def save(self, record: SessionRecord) -> None:
        record = check_record(record)
        key = self.key(record.session_id)
        saves_key = key + SAVES_SUFFIX
        saves_before = await self._quietly(self.cache.aget, saves_key)
        await self.backing_store.save(record)
        try:
            await self.cache.aset(key, _encode(record), self.timeout)
            saves_after = await self._count_save(saves_key)
        except Exception as exc:
            # The old record must not stay: drop it, as a delete whose tombstone is refused does.
            failed(self.cache_alias, exc)
            await self._drop([record.session_id])
            return
        if saves_after != (saves_before if isinstance(saves_before, int) else 0) + 1:
            # Another save of this id ran meanwhile: the last value cached may
            # be older than the last one written. Let the next load read it.
            await self._drop([record.session_id])

    async def load(self, session_id: SessionId) -> SessionRecord:
        session_id = SessionId(session_id)
        key = self.key(session_id)
        cached = await self._quietly(self.cache.aget, key)
        if cached == TOMBSTONE:
            raise NotFound(f"no session {session_id}")
        record = _decode(session_id, cached)
        if record is not None:
            return record
        record = await self.backing_store.load(session_id)
        await self._quietly(self.cache.aadd, key, _encode(record), self.timeout)
        return record

    async def delete(self, session_id: SessionId) -> None:
        session_id = SessionId(session_id)
        await self.backing_store.delete(session_id)
        await self._forget([session_id])

    # -- batches -----------------------------------------------------------

    async def save_many(self, records: Iterable[SessionRecord]) -> None:
        records = [check_record(record) for record in records]
        await self.backing_store.save_many(records)
        values = {self.key(record.session_id): _encode(record) for record in records}
        try:
            refused = await self.cache.aset_many(values, self.timeout)
        except Exception as exc:
            failed(self.cache_alias, exc)
            refused = list(values)
        if refused:
            await self._drop(
                [record.session_id for record in records if self.key(record.session_id) in refused]
            )

    async def load_many(self, session_ids: Iterable[SessionId]) -> dict[SessionId, SessionRecord]:
        wanted = {self.key(sid): sid for sid in map(SessionId, session_ids)}
        cached = await self._quietly(self.cache.aget_many, list(wanted)) or {}
        found: dict[SessionId, SessionRecord] = {}
        missing: list[SessionId] = []
        for key, session_id in wanted.items():
            value = cached.get(key)
            if value == TOMBSTONE:
                continue
            record = _decode(session_id, value)
            if record is None:
                missing.append(session_id)
            else:
                found[session_id] = record
        if missing:
            loaded = await self.backing_store.load_many(missing)
            for session_id, record in loaded.items():
                await self._quietly(self.cache.aadd, self.key(session_id), _encode(record), self.timeout)
            found.update(loaded)
        return found

    async def delete_many(self, session_ids: Iterable[SessionId]) -> None:
        doomed = [SessionId(sid) for sid in session_ids]
        await self.backing_store.delete_many(doomed)
        await self._forget(doomed)

    async def aclose(self) -> None:
        """Close the backing store's connections and the cache's client for this loop."""
        try:
            await self.backing_store.aclose()
        finally:
            await self._quietly(self.cache.aclose)

    # -- plumbing ----------------------------------------------------------

    async def _forget(self, session_ids: list[SessionId]) -> None:
        """Tombstone deleted ids; failing that, drop their cached records; failing that, say so."""
        keys = [self.key(sid) for sid in session_ids]
        try:
            refused = await self.cache.aset_many(dict.fromkeys(keys, TOMBSTONE), self.timeout)
        except Exception as exc:
            failed(self.cache_alias, exc)
            refused = keys
        if refused:
            await self._drop([sid for sid in session_ids if self.key(sid) in refused], deleted=True)

    async def _drop(self, session_ids: list[SessionId], *, deleted: bool = False) -> None:
        """Take the cached records of ``session_ids`` out of service; failing that, name deleted ones.

        A record that may be stale gets the ``STALE`` marker (a load still
        reading an older value cannot add it back); where the cache refuses
        that write (Redis out of memory refuses writes, not deletions), and
        for deleted sessions whose tombstone it refused, the keys are
        deleted. A cache that fails is an outage, logged once
        (``caching.failed``); deleted sessions it may still serve are named
        each time, since serving them would bring back a delete.
        """
        keys = [self.key(sid) for sid in session_ids]
        if not deleted:
            try:
                keys = list(await self.cache.aset_many(dict.fromkeys(keys, STALE), self.timeout))
            except Exception as exc:
                failed(self.cache_alias, exc)
            if not keys:
                return
        try:
            await self.cache.adelete_many(keys)
        except Exception as exc:
            failed(self.cache_alias, exc)
            if deleted:
                logger.error(
                    "cache %r refused to forget deleted sessions %s (%s: %s); may serve them for up to %ss",
                    self.cache_alias, ", ".join(str(sid) for sid in session_ids), type(exc).__name__, exc,
                    self.timeout,
                )  # fmt: skip

    async def _count_save(self, saves_key: str) -> int:
        """Count one more save of a session; the count after it.

        No counter yet, or it expired: start one (a count lost meanwhile reads as a change).
        """
        # The sync incr(): the backends' own, atomic on Redis, memcached and
        # locmem; BaseCache.aincr() is a get and a set, which loses counts.
        incr = sync_to_async(self.cache.incr, thread_sensitive=True)
        try:
            count: int = await incr(saves_key)
        except ValueError:
            await self.cache.aadd(saves_key, 0, self.timeout)
            count = await incr(saves_key)
        return count

    async def _quietly(self, call: Callable[P, Awaitable[T]], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """Run a cache call; on failure carry on without the cache (an outage is logged once)."""
        try:
            answer = await call(*args, **kwargs)
        except Exception as exc:
            failed(self.cache_alias, exc)
            return None
        answered(self.cache_alias)
        return answer


def _encode(record: SessionRecord) -> tuple[int, int]:
    return (record.agent_id, record.started_at_ns)


def _decode(session_id: SessionId, value: object) -> SessionRecord | None:
    """The cached record, or None for a miss or a value this version cannot read."""
    if not (isinstance(value, tuple) and len(value) == 2):
        return None
    try:
        return SessionRecord(session_id, *value)
    except (TypeError, ValueError):
        return None
