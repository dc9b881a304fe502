"""The store's SQL, written once per model table and database vendor.

Every path of the database store (Django's cursor, sqlite3 on its thread,
psycopg's async connections) runs these statements, so they cannot drift
apart. A statement is its text with ``%s`` placeholders and its parameters;
the batch calls are lists of statements, cut into chunks here and nowhere
else.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, TypeVar

from django.db import connections
from django.db.models import Field

from ..errors import OutOfScope, SerializationError
from ..types import SessionId, SessionRecord, decode_unsigned, encode_unsigned

if TYPE_CHECKING:
    from ...models import AbstractExecutionSession

Param = int | bytes | list[bytes] | list[int]
"""What the store binds: ids as bytes, numbers as ints, or a column of either (PostgreSQL arrays)."""
Params = Sequence[Param]
Row = tuple[object, ...]
Item = TypeVar("Item", SessionRecord, bytes)
Statement = tuple[str, Params]
Agents = tuple[int, ...]
"""The agent ids a scoped store may see (``DjangoSessionStore.for_agents``); ``None``: every agent."""

# Rows per statement where a batch lists its rows: 3 parameters a row, and
# a scope's agents (at most 100, MAX_KEY_AGENTS), stay under every supported
# database's parameter limit (999 on SQLite before 3.32). PostgreSQL passes
# three arrays instead, whatever the row count, and cuts only to bound one
# statement's size.
BATCH_ROWS = 250
ARRAY_ROWS = 10_000


@dataclass(frozen=True)
class SessionSQL:
    """The statements on one table of one database; each method returns ``(sql, params)``."""

    vendor: str
    table: str
    session_id: str
    agent_id: str
    started_at_ns: str
    upsert_suffix: str

    # -- the contract --------------------------------------------------------

    def save(self, record: SessionRecord) -> Statement:
        """One atomic upsert, never read-then-write."""
        return self._insert_sql(1) + self.upsert_suffix, record_params(record)

    def load(self, session_id: SessionId, agents: Agents | None = None) -> Statement:
        """Select ``(agent_id, stored start)`` by primary key (and, scoped, only among ``agents``)."""
        sql = f"SELECT {self.agent_id}, {self.started_at_ns} FROM {self.table} WHERE {self.session_id} = %s"
        return self._scoped((sql, (bytes(session_id),)), agents)

    def delete(self, session_id: SessionId, agents: Agents | None = None) -> Statement:
        sql = f"DELETE FROM {self.table} WHERE {self.session_id} = %s"
        return self._scoped((sql, (bytes(session_id),)), agents)

    # -- beyond the contract -------------------------------------------------

    def insert(self, record: SessionRecord) -> Statement:
        """A plain ``INSERT``: an integrity error if the id exists."""
        return self._insert_sql(1), record_params(record)

    def insert_if_absent(self, record: SessionRecord) -> Statement:
        """Insert, or do nothing if the id exists (rowcount 0)."""
        if self.vendor == "mysql":
            return self._insert_sql(1).replace("INSERT INTO", "INSERT IGNORE INTO", 1), record_params(record)
        return self._insert_sql(1) + f" ON CONFLICT ({self.session_id}) DO NOTHING", record_params(record)

    def update(self, record: SessionRecord, agents: Agents | None = None) -> Statement:
        session_id, agent_id, stored_start = record_params(record)
        assignments = f"{self.agent_id} = %s, {self.started_at_ns} = %s"
        sql = f"UPDATE {self.table} SET {assignments} WHERE {self.session_id} = %s"
        return self._scoped((sql, (agent_id, stored_start, session_id)), agents)

    def upsert_reporting_insert(
        self, record: SessionRecord, agents: Agents | None = None
    ) -> Statement | None:
        """PostgreSQL only: the upsert, answering one row ``(created,)``.

        ``xmax`` is 0 on a row version that an ``INSERT`` created and holds
        the updating transaction's id when ``ON CONFLICT`` updated it: the
        usual PostgreSQL idiom for telling the two apart in one statement.
        Scoped to ``agents``, an id stored under another agent is left
        alone (the ``WHERE`` of ``DO UPDATE`` is checked on the locked row)
        and the statement answers no row.
        """
        if self.vendor != "postgresql":
            return None
        suffix, extra = self.upsert_suffix_for(agents)
        return self._insert_sql(1) + suffix + " RETURNING (xmax = 0)", (*record_params(record), *extra)

    def insert_then_update(self, record: SessionRecord, agents: Agents | None = None) -> list[Statement]:
        """The upsert as two statements for one transaction, where no one statement reports both.

        The insert touches a row only if the id was absent; the update then
        always touches one (it rewrites a fresh row with its own values). So
        the transaction touched 2 rows if it created the record, 1 if it
        replaced it. The first statement is a write, so the transaction holds
        the write lock (SQLite) or the row lock (MySQL) from its start.
        Scoped to ``agents`` (which hold the record's own agent), the update
        skips an id stored under another agent: 0 rows touched, nothing
        written.
        """
        return [self.insert_if_absent(record), self.update(record, agents)]

    def upsert_suffix_for(self, agents: Agents | None) -> tuple[str, Params]:
        """The upsert's conflict clause; scoped, it never overwrites a row of an agent outside ``agents``."""
        if agents is None:
            return self.upsert_suffix, ()
        if self.vendor == "mysql":
            # No WHERE on ON DUPLICATE KEY UPDATE: each column keeps its value
            # unless the stored agent is in scope. Assignments run left to
            # right, so the start is decided before the agent changes.
            condition, params = self._agent_in(agents)
            keep = ", ".join(
                f"{column} = IF({condition}, VALUES({column}), {column})"
                for column in (self.started_at_ns, self.agent_id)
            )
            return f" ON DUPLICATE KEY UPDATE {keep}", (*params, *params)
        condition, params = self._agent_in(agents, qualified=True)
        return f"{self.upsert_suffix} WHERE {condition}", params

    def foreign_among(self, session_ids: Sequence[bytes], agents: Agents) -> list[Statement]:
        """Selects of the ids among ``session_ids`` stored under an agent outside ``agents``."""
        condition, params = self._agent_in(agents)
        select = f"SELECT {self.session_id} FROM {self.table}"

        # MySQL: a locking read, which sees the latest committed rows even
        # inside a REPEATABLE READ transaction whose snapshot is older.
        lock = " FOR UPDATE" if self.vendor == "mysql" else ""

        def statement(chunk: Sequence[bytes]) -> Statement:
            sql, ids = self._where_id_in(select, chunk)
            return f"{sql} AND NOT ({condition}){lock}", (*ids, *params)

        return self._batches(session_ids, statement)

    def count_before(self, cutoff_ns: int) -> Statement:
        sql = f"SELECT COUNT(*) FROM {self.table} WHERE {self.started_at_ns} < %s"
        return sql, (encode_unsigned(cutoff_ns),)

    def purge_batch(self, cutoff_ns: int, batch_size: int) -> Statement:
        """Delete at most ``batch_size`` of the rows that started before ``cutoff_ns``, oldest first."""
        params = (encode_unsigned(cutoff_ns), batch_size)
        oldest = f"WHERE {self.started_at_ns} < %s ORDER BY {self.started_at_ns} LIMIT %s"
        if self.vendor == "mysql":
            # MySQL cannot LIMIT a subquery under IN, but DELETE takes LIMIT itself.
            return f"DELETE FROM {self.table} {oldest}", params
        chosen = f"SELECT {self.session_id} FROM {self.table} {oldest}"
        return f"DELETE FROM {self.table} WHERE {self.session_id} IN ({chosen})", params

    # -- batches: lists of statements -----------------------------------------

    @property
    def uses_arrays(self) -> bool:
        return self.vendor == "postgresql"

    def save_batches(self, records: Sequence[SessionRecord], agents: Agents | None = None) -> list[Statement]:
        """Upserts of every record; the ids must be unique (one statement may not touch a row twice).

        Scoped to ``agents``, a row of another agent is left as it was; run
        ``foreign_among`` after them in the same transaction to refuse the batch.
        """
        suffix, extra = self.upsert_suffix_for(agents)
        if self.uses_arrays:
            sql = (
                f"INSERT INTO {self.table} ({self.session_id}, {self.agent_id}, {self.started_at_ns}) "
                f"SELECT * FROM unnest(%s::bytea[], %s::bigint[], %s::bigint[]){suffix}"
            )
            return self._batches(records, lambda chunk: (sql, (*column_params(chunk), *extra)))
        return self._batches(
            records, lambda chunk: (self._insert_sql(len(chunk)) + suffix, [*flat_params(chunk), *extra])
        )

    def scoped_save_batches(
        self, records: Sequence[SessionRecord], agents: Agents | None
    ) -> tuple[list[Statement], list[Statement]]:
        """``save_batches`` and the guards for ``in_transaction(..., refuse_if_found=...)``.

        Scoped, the upserts leave other agents' rows as they were and the
        guards then find those ids, holding the locks the upserts took, so
        the whole batch rolls back: a batch is saved whole or not at all.
        """
        statements = self.save_batches(records, agents)
        if agents is None:
            return statements, []
        return statements, self.foreign_among([bytes(record.session_id) for record in records], agents)

    def load_batches(self, session_ids: Sequence[bytes], agents: Agents | None = None) -> list[Statement]:
        """Selects of ``(session_id, agent_id, stored start)`` rows for the ids (scoped: among ``agents``)."""
        select = f"SELECT {self.session_id}, {self.agent_id}, {self.started_at_ns} FROM {self.table}"
        return self._batches(session_ids, lambda ids: self._scoped(self._where_id_in(select, ids), agents))

    def delete_batches(self, session_ids: Sequence[bytes], agents: Agents | None = None) -> list[Statement]:
        delete = f"DELETE FROM {self.table}"
        return self._batches(session_ids, lambda ids: self._scoped(self._where_id_in(delete, ids), agents))

    def _batches(
        self, items: Sequence[Item], statement: Callable[[Sequence[Item]], Statement]
    ) -> list[Statement]:
        size = ARRAY_ROWS if self.uses_arrays else BATCH_ROWS
        return [statement(items[start : start + size]) for start in range(0, len(items), size)]

    def _where_id_in(self, head: str, ids: Sequence[bytes]) -> Statement:
        if self.uses_arrays:
            return f"{head} WHERE {self.session_id} = ANY(%s::bytea[])", (list(ids),)
        return f"{head} WHERE {self.session_id} IN ({', '.join(['%s'] * len(ids))})", ids

    def _agent_in(self, agents: Agents, *, qualified: bool = False) -> tuple[str, Params]:
        """``agent_id`` among ``agents``, as a condition and its parameters (no agents: false)."""
        column = f"{self.table}.{self.agent_id}" if qualified else self.agent_id
        if not agents:
            return "1 = 0", ()
        if self.uses_arrays:
            return f"{column} = ANY(%s::bigint[])", (list(agents),)
        return f"{column} IN ({', '.join(['%s'] * len(agents))})", agents

    def _scoped(self, statement: Statement, agents: Agents | None) -> Statement:
        """``statement`` (which ends in a ``WHERE``) limited to rows of ``agents``; ``None``: unchanged."""
        if agents is None:
            return statement
        condition, params = self._agent_in(agents)
        return f"{statement[0]} AND {condition}", (*statement[1], *params)

    def _insert_sql(self, rows: int) -> str:
        columns = f"{self.session_id}, {self.agent_id}, {self.started_at_ns}"
        return f"INSERT INTO {self.table} ({columns}) VALUES " + ", ".join(["(%s, %s, %s)"] * rows)


@cache
def session_sql(model: type[AbstractExecutionSession], alias: str) -> SessionSQL:
    """The statements for ``model`` on the database ``alias``, built once."""
    connection = connections[alias]
    quote = connection.ops.quote_name

    def column(name: str) -> str:
        field = model._meta.get_field(name)
        assert isinstance(field, Field) and field.column
        return quote(field.column)

    agent, started = column("agent_id"), column("started_at_ns")
    if connection.vendor == "mysql":
        # MySQL and MariaDB have no ON CONFLICT; the primary key is the only
        # unique key, so ON DUPLICATE KEY is the same atomic upsert.
        suffix = f" ON DUPLICATE KEY UPDATE {agent} = VALUES({agent}), {started} = VALUES({started})"
    else:
        suffix = (
            f" ON CONFLICT ({column('session_id')}) DO UPDATE "
            f"SET {agent} = EXCLUDED.{agent}, {started} = EXCLUDED.{started}"
        )
    return SessionSQL(
        vendor=connection.vendor,
        table=quote(str(model._meta.db_table)),
        session_id=column("session_id"),
        agent_id=agent,
        started_at_ns=started,
        upsert_suffix=suffix,
    )


def record_params(record: SessionRecord) -> tuple[bytes, int, int]:
    """The three parameters of one upsert row (the start time offset into the signed range)."""
    return bytes(record.session_id), record.agent_id, encode_unsigned(record.started_at_ns)


def column_params(records: Sequence[SessionRecord]) -> tuple[list[bytes], list[int], list[int]]:
    """The upsert parameters as three columns, for PostgreSQL's ``unnest``."""
    return (
        [bytes(record.session_id) for record in records],
        [record.agent_id for record in records],
        [encode_unsigned(record.started_at_ns) for record in records],
    )


def flat_params(records: Sequence[SessionRecord]) -> list[Param]:
    params: list[Param] = []
    for record in records:
        params.extend(record_params(record))
    return params


def check_refusals(found: Sequence[Row]) -> None:
    """Raise ``OutOfScope`` naming the ids of ``found`` rows, if any (a path's ``refuse_if_found``)."""
    if found:
        ids = tuple(bytes(row[0]) for row in found if isinstance(row[0], (bytes, bytearray, memoryview)))
        shown = ", ".join(str(SessionId(session_id)) for session_id in ids[:5])
        raise OutOfScope(f"stored under an agent outside the scope: {shown}", ids)


def dedupe_last_wins(records: Iterable[SessionRecord]) -> list[SessionRecord]:
    """One record per id, the last given: one statement may not touch a row twice."""
    return list({record.session_id: record for record in records}.values())


def unique_ids(session_ids: Iterable[bytes]) -> list[bytes]:
    """The ids as raw bytes, each once, in the order given; a malformed id raises before any query."""
    return list(dict.fromkeys(bytes(SessionId(session_id)) for session_id in session_ids))


def records_by_id(rows: Iterable[Row]) -> dict[SessionId, SessionRecord]:
    """Decode ``(session_id, agent_id, stored start)`` rows into the ``load_many`` answer."""
    records = (decode_row(row[0], row[1], row[2]) for row in rows)
    return {record.session_id: record for record in records}


def decode_row(session_id: object, agent_id: object, stored_start: object) -> SessionRecord:
    """Turn a stored row back into a record; a row that does not decode is ``SerializationError``.

    Only what the columns can hold is accepted: bytes for the id, integers
    for the two numbers (SQLite's loose typing could hand back text).
    """
    try:
        if not isinstance(session_id, (bytes, bytearray, memoryview)):
            raise TypeError(f"session_id is stored as {type(session_id).__name__}, not bytes")
        if not isinstance(agent_id, int):
            raise TypeError(f"agent_id is stored as {type(agent_id).__name__}, not an integer")
        if not isinstance(stored_start, int) or isinstance(stored_start, bool):
            raise TypeError(f"started_at_ns is stored as {type(stored_start).__name__}, not an integer")
        return SessionRecord(SessionId(session_id), agent_id, decode_unsigned(stored_start))
    except (TypeError, ValueError) as exc:
        shown = bytes(session_id).hex() if isinstance(session_id, (bytes, bytearray, memoryview)) else "?"
        raise SerializationError(f"stored session {shown} does not decode: {exc}") from exc
