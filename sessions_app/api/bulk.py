"""The bulk endpoints' bodies: many records validated and encoded without a serializer per item.

A DRF serializer costs tens of microseconds a record; ten thousand records
a call would spend most of the request there. Here each item takes a fast
path (exact types, the one id parser, the one range check) and only an item
that fails it goes through the serializer fields, for the same messages the
single-record calls give, keyed by the item's index.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from ..storage.types import AGENT_ID_MAX, STARTED_AT_NS_MAX, SessionId, SessionRecord
from .fields import AgentIdField, NanosecondsField, SessionIdField

_FIELDS: dict[str, serializers.Field] = {  # type: ignore[type-arg]
    "session_id": SessionIdField(),
    "agent_id": AgentIdField(maximum=AGENT_ID_MAX),
    "started_at_ns": NanosecondsField(maximum=STARTED_AT_NS_MAX),
}
for _name, _field in _FIELDS.items():
    _field.field_name = _name


def integer(value: object, maximum: int) -> int:
    """An id or a time in its common form (an int, or ASCII digits) and range, else ``ValueError``."""
    if type(value) is int or (
        type(value) is str and value.isascii() and value.isdigit() and len(value) <= 20
    ):
        number = int(value)
        if 0 <= number <= maximum:
            return number
    raise ValueError


def _record(item: object) -> SessionRecord:
    """The fast path: ``ValueError``/``TypeError``/``KeyError`` for anything it does not take as is."""
    if type(item) is not dict:
        raise TypeError
    text = item["session_id"]
    if type(text) is not str:
        raise TypeError
    return SessionRecord(
        SessionId.parse(text),
        integer(item["agent_id"], AGENT_ID_MAX),
        integer(item["started_at_ns"], STARTED_AT_NS_MAX),
    )


def _item_errors(item: object) -> dict[str, list[str]]:
    """What is wrong with one item, as the single-record calls would say it."""
    if not isinstance(item, dict):
        return {"non_field_errors": ["Expected an object with session_id, agent_id and started_at_ns."]}
    errors: dict[str, list[str]] = {}
    for name, field in _FIELDS.items():
        if name not in item:
            errors[name] = ["This field is required."]
            continue
        try:
            field.to_internal_value(item[name])
        except ValidationError as exc:
            errors[name] = [str(message) for message in exc.detail]
    return errors


def checked_list(body: Any, key: str, limit: int) -> list[object]:
    """``body[key]``, which must be a list of at most ``limit`` items."""
    if not isinstance(body, dict) or key not in body:
        raise ValidationError({key: ["This field is required."]})
    items = body[key]
    if not isinstance(items, list):
        raise ValidationError({key: ["Expected a list."]})
    if len(items) > limit:
        raise ValidationError(
            {key: [f"At most {limit} items a call (SESSIONS_APP['MAX_BULK']); got {len(items)}."]}
        )
    return items


def records_from(body: Any, limit: int) -> list[SessionRecord]:
    """The records of a bulk-save body; a 400 naming every bad item's index and field, else nothing."""
    items = checked_list(body, "sessions", limit)
    records: list[SessionRecord] = []
    errors: dict[str, dict[str, list[str]]] = {}
    for index, item in enumerate(items):
        try:
            records.append(_record(item))
        except (TypeError, ValueError, KeyError):
            errors[str(index)] = _item_errors(item)
    if errors:
        raise ValidationError({"sessions": errors})
    return records


def ids_from(body: Any, limit: int) -> list[SessionId]:
    """The ids of a bulk-load or bulk-delete body; a 400 naming every malformed one's index."""
    items = checked_list(body, "session_ids", limit)
    ids: list[SessionId] = []
    errors: dict[str, list[str]] = {}
    for index, item in enumerate(items):
        try:
            if type(item) is not str:
                raise TypeError
            ids.append(SessionId.parse(item))
        except (TypeError, ValueError):
            errors[str(index)] = [str(_FIELDS["session_id"].error_messages["invalid"])]
    if errors:
        raise ValidationError({"session_ids": errors})
    return ids
