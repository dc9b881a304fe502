"""The JSON form of a session record."""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ..storage.types import AGENT_ID_MAX, STARTED_AT_NS_MAX, SessionId, SessionRecord
from .fields import AgentIdField, NanosecondsField, SessionIdField


def ns_to_iso8601(started_at_ns: int) -> str:
    """UTC ISO 8601 with microseconds and a ``Z``: ``2025-11-25T10:40:00.123456Z``.

    Exact to the microsecond (truncated, not rounded, so it never shows a
    later time than the nanoseconds say). 2**64-1 ns is in the year 2554.
    """
    seconds, nanoseconds = divmod(started_at_ns, 1_000_000_000)
    days, second = divmod(seconds, 86_400)
    minutes, second = divmod(second, 60)
    hour, minute = divmod(minutes, 60)
    return "%s%02d:%02d:%02d.%06dZ" % (_date_part(days), hour, minute, second, nanoseconds // 1000)  # noqa: UP031


@lru_cache(maxsize=4096)
def _date_part(days: int) -> str:
    """``YYYY-MM-DDT`` of a day since the epoch: a bulk load's records share a few days (0.4 us a record)."""
    t = time.gmtime(days * 86_400)
    return "%04d-%02d-%02dT" % (t.tm_year, t.tm_mon, t.tm_mday)  # noqa: UP031


def record_json(record: SessionRecord) -> dict[str, object]:
    """One record as the API writes it, without a serializer (the detail and bulk calls answer with it)."""
    return {
        "session_id": str(record.session_id),
        "agent_id": str(record.agent_id),
        "started_at_ns": str(record.started_at_ns),
        "started_at": ns_to_iso8601(record.started_at_ns),
    }


class ExecutionSessionSerializer(serializers.Serializer):  # type: ignore[type-arg]
    """One agent execution session.

    ``session_id`` is UUID text; ``started_at_ns`` is a decimal string;
    ``started_at`` is derived from it, ISO 8601 in UTC.
    """

    # Reads ``ExecutionSession`` instances and ``SessionRecord`` values alike;
    # ``to_record`` turns validated input into a record.

    session_id = SessionIdField(required=False)
    agent_id = AgentIdField(maximum=AGENT_ID_MAX)
    started_at_ns = NanosecondsField(maximum=STARTED_AT_NS_MAX)
    started_at = serializers.SerializerMethodField()

    @extend_schema_field({"type": "string", "format": "date-time", "readOnly": True})
    def get_started_at(self, obj: Any) -> str:
        return ns_to_iso8601(obj.started_at_ns)

    def to_record(self, session_id: SessionId | None = None) -> SessionRecord:
        data = self.validated_data
        return SessionRecord(
            session_id or data.get("session_id") or SessionId.new(),
            data["agent_id"],
            data["started_at_ns"],
        )


class ExecutionSessionBodySerializer(ExecutionSessionSerializer):
    """The body of ``PUT`` and ``PATCH``: the id comes from the URL.

    For the schema only. The views still accept a ``session_id`` in the body
    and answer 400 when it differs from the URL's, a rule OpenAPI cannot say.
    """

    session_id = None  # type: ignore[assignment]
