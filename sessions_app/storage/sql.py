"""The SQL of the store, written once per model and database vendor.

Every path of ``DjangoSessionStore`` (Django's cursor, the native async
drivers) runs these same statements, so they cannot drift apart. Values are
converted by the model's own fields, so the offset of ``started_at_ns`` and
the binary id are encoded in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

from django.db import connections

from .errors import SerializationError
from .types import SessionId, SessionRecord

_SIGNED_OFFSET = 2**63

# Rows per statement in the batch calls that list their rows: 3 parameters
# a row stays under every supported database's parameter limit (999 on
# SQLite before 3.32). PostgreSQL passes arrays and uses ARRAY_ROWS.
BATCH_ROWS = 300
ARRAY_ROWS = 10_000


def encode_unsigned(value: int) -> int:
    """Map ``0..2**64-1`` onto a signed 64-bit column's ``-2**63..2**63-1``.

    Subtracting a constant keeps the order, so SQL comparisons and ``ORDER
    BY`` on the stored value agree with Python's order of the real values.
    """
    return value - _SIGNED_OFFSET


def decode_unsigned(stored: int) -> int:
    """Inverse of ``encode_unsigned``."""
    return int(stored) + _SIGNED_OFFSET


@dataclass(frozen=True)
class SessionSQL:
    """Statements for one model table, with ``%s`` placeholders (DB-API ``format`` style)."""

    table: str
    upsert_one: str
    upsert_prefix: str
    upsert_row: str
    upsert_suffix: str
    select_one: str
    select_many_prefix: str
    delete_one: str
    delete_many_prefix: str
    insert: str
    insert_if_absent: str
    update_one: str
    upsert_reporting_insert: str | None
    # PostgreSQL only: batches as one statement over arrays, whatever their size.
    upsert_array: str | None = None
    select_any: str | None = None
    delete_any: str | None = None

    def upsert(self, rows: int = 1) -> str:
        return self.upsert_prefix + ", ".join([self.upsert_row] * rows) + self.upsert_suffix

    def select_many(self, count: int) -> str:
        return self.select_many_prefix + ", ".join(["%s"] * count) + ")"

    def delete_many(self, count: int) -> str:
        return self.delete_many_prefix + ", ".join(["%s"] * count) + ")"


@cache
def session_sql(model: type, vendor: str, alias: str) -> SessionSQL:
    """Build (once) the statements for ``model`` on the database ``alias``."""
    quote = connections[alias].ops.quote_name
    meta = model._meta  # type: ignore[attr-defined]
    table = quote(meta.db_table)
    sid = quote(meta.get_field("session_id").column)
    agent = quote(meta.get_field("agent_id").column)
    started = quote(meta.get_field("started_at_ns").column)
    if vendor == "mysql":
        # MySQL and MariaDB have no ON CONFLICT; the primary key is the only
        # unique key, so ON DUPLICATE KEY is the same atomic upsert.
        suffix = f" ON DUPLICATE KEY UPDATE {agent} = VALUES({agent}), {started} = VALUES({started})"
    else:
        suffix = (
            f" ON CONFLICT ({sid}) DO UPDATE SET {agent} = EXCLUDED.{agent}, {started} = EXCLUDED.{started}"
        )
    insert = f"INSERT INTO {table} ({sid}, {agent}, {started}) VALUES (%s, %s, %s)"
    if vendor == "mysql":
        insert_if_absent = insert.replace("INSERT INTO", "INSERT IGNORE INTO", 1)
    else:
        insert_if_absent = f"{insert} ON CONFLICT ({sid}) DO NOTHING"
    # xmax is 0 on a row version that an INSERT created and holds the
    # updating transaction's id when ON CONFLICT updated it: the usual
    # PostgreSQL idiom for telling the two apart in one statement.
    reporting = insert + suffix + " RETURNING (xmax = 0)" if vendor == "postgresql" else None
    arrays: dict[str, str] = {}
    if vendor == "postgresql":
        arrays = {
            "upsert_array": f"INSERT INTO {table} ({sid}, {agent}, {started}) "
            f"SELECT * FROM unnest(%s::bytea[], %s::bigint[], %s::bigint[]){suffix}",
            "select_any": f"SELECT {sid}, {agent}, {started} FROM {table} WHERE {sid} = ANY(%s::bytea[])",
            "delete_any": f"DELETE FROM {table} WHERE {sid} = ANY(%s::bytea[])",
        }
    return SessionSQL(
        **arrays,
        table=table,
        upsert_one=f"INSERT INTO {table} ({sid}, {agent}, {started}) VALUES (%s, %s, %s){suffix}",
        insert=insert,
        insert_if_absent=insert_if_absent,
        update_one=f"UPDATE {table} SET {agent} = %s, {started} = %s WHERE {sid} = %s",
        upsert_reporting_insert=reporting,
        upsert_prefix=f"INSERT INTO {table} ({sid}, {agent}, {started}) VALUES ",
        upsert_row="(%s, %s, %s)",
        upsert_suffix=suffix,
        select_one=f"SELECT {agent}, {started} FROM {table} WHERE {sid} = %s",
        select_many_prefix=f"SELECT {sid}, {agent}, {started} FROM {table} WHERE {sid} IN (",
        delete_one=f"DELETE FROM {table} WHERE {sid} = %s",
        delete_many_prefix=f"DELETE FROM {table} WHERE {sid} IN (",
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


def flat_params(records: Sequence[SessionRecord]) -> list[Any]:
    params: list[Any] = []
    for record in records:
        params.extend(record_params(record))
    return params


def dedupe_last_wins(records: Iterable[SessionRecord]) -> list[SessionRecord]:
    """One record per id, the last given: one statement may not touch a row twice."""
    return list({record.session_id: record for record in records}.values())


def unique_ids(session_ids: Iterable[Any]) -> list[bytes]:
    """The ids as raw bytes, each once, in the order given; a malformed id raises before any query."""
    return list(dict.fromkeys(bytes(SessionId(session_id)) for session_id in session_ids))


def records_by_id(rows: Iterable[tuple[Any, ...]]) -> dict[SessionId, SessionRecord]:
    """Decode ``(session_id, agent_id, stored_start)`` rows into the ``load_many`` answer."""
    records = (decode_row(bytes(sid), agent, start) for sid, agent, start in rows)
    return {record.session_id: record for record in records}


def decode_row(session_id: bytes, agent_id: Any, stored_start: Any) -> SessionRecord:
    """Turn a stored row back into a record; a row that does not decode is ``SerializationError``."""
    try:
        return SessionRecord(SessionId(session_id), agent_id, decode_unsigned(stored_start))
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"stored session {bytes(session_id).hex()} does not decode: {exc}") from exc


def chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
