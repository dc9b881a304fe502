"""Serializer fields for the session id and the 64-bit integers.

They parse with the same functions as the model and the store
(``parse_session_id``, ``check_int_range``), so a range or a spelling is
defined once for every surface.
"""

from __future__ import annotations

import re
from typing import Any

from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.utils import html

from ..storage.types import SessionId, check_int_range, parse_session_id

_DECIMAL_DIGITS = re.compile(r"[0-9]{1,20}")


def decimal_at_most(maximum: int) -> str:
    """A regular expression for the decimal strings of ``0..maximum`` (leading zeros allowed).

    It goes into the OpenAPI schema, so that a client or a fuzzer generating
    schema-valid values never produces one the API then refuses as too big:
    shorter numbers are always below, and a number as long as ``maximum``
    is below it if, at the first digit where they differ, its digit is less.
    """
    bound = str(maximum)
    alternatives = [f"[0-9]{{1,{len(bound) - 1}}}"] if len(bound) > 1 else []
    for index, digit in enumerate(int(ch) for ch in bound):
        if digit:
            rest = len(bound) - index - 1
            smaller = "0" if digit == 1 else f"[0-{digit - 1}]"
            alternatives.append(bound[:index] + smaller + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(bound)
    return "^(" + "|".join(alternatives) + ")$"


@extend_schema_field(OpenApiTypes.UUID)
class SessionIdField(serializers.Field):  # type: ignore[type-arg]
    """A session id as canonical UUID text; input also takes 32 hex digits.

    An empty form field is a malformed id, not an omitted one (DRF would
    otherwise treat ``session_id=`` in a form like a missing field).
    """

    default_error_messages = {
        "invalid": _("Must be a UUID (8-4-4-4-12 hex digits) or 32 hex digits."),
    }

    def get_value(self, dictionary: Any) -> Any:
        if html.is_html_input(dictionary) and dictionary.get(self.field_name) == "":
            return ""
        return super().get_value(dictionary)

    def to_internal_value(self, data: Any) -> SessionId:
        if not isinstance(data, str):
            self.fail("invalid")
        try:
            return parse_session_id(data)
        except (TypeError, ValueError):
            self.fail("invalid")
            raise  # unreachable: fail() raises

    def to_representation(self, value: Any) -> str:
        return str(SessionId(value))


class BoundedIntegerField(serializers.Field):  # type: ignore[type-arg]
    """An integer in ``0..maximum``, from a JSON integer or a string of decimal digits.

    Booleans, floats and anything else are refused: ``true`` or ``1.5`` is
    never a meaningful id or timestamp. ``as_string`` writes the value as a
    decimal string, for integers past 2**53 that JavaScript would round.
    """

    default_error_messages = {
        "invalid": _("Must be an integer in 0..{maximum}, as a JSON integer or a string of digits."),
        "range": _("Must be an integer in 0..{maximum}."),
    }
    # For the OpenAPI schema (api/schema.py).
    example = "0"
    description = "An integer"

    def __init__(self, *, maximum: int, as_string: bool = False, **kwargs: Any) -> None:
        self.maximum = maximum
        self.as_string = as_string
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, str) and _DECIMAL_DIGITS.fullmatch(data):
            value = int(data)
        elif isinstance(data, int) and not isinstance(data, bool):
            value = data
        else:
            self.fail("invalid", maximum=self.maximum)
        try:
            return check_int_range(self.field_name or "value", value, self.maximum)
        except ValueError:
            self.fail("range", maximum=self.maximum)
            raise  # unreachable: fail() raises

    def to_representation(self, value: int) -> int | str:
        return str(value) if self.as_string else int(value)


class NanosecondsField(BoundedIntegerField):
    """``started_at_ns``: an unsigned 64-bit integer, written as a decimal string.

    Its OpenAPI schema (``api/schema.py``): a string of digits on output; a
    string of digits or a JSON integer on input, with the exact range.
    """

    example = "1764067200123456789"
    description = "Nanoseconds since the Unix epoch, 0..18446744073709551615"

    def __init__(self, *, maximum: int, **kwargs: Any) -> None:
        super().__init__(maximum=maximum, as_string=True, **kwargs)


class AgentIdField(BoundedIntegerField):
    """``agent_id``: ``0..2**63-1``, written as a decimal string as ``started_at_ns`` is.

    A JavaScript number holds integers exactly only up to 2**53; an agent id
    above that would silently become another agent's in such a client.
    """

    example = "42"
    description = "The agent that owns the session, 0..9223372036854775807"

    def __init__(self, *, maximum: int, **kwargs: Any) -> None:
        super().__init__(maximum=maximum, as_string=True, **kwargs)
