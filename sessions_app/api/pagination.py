"""Cursor pagination: newest start first, stable while rows are inserted."""

from __future__ import annotations

import re
from typing import Any

from django.db.models import Q
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import Cursor, CursorPagination, _reverse_ordering

from ..conf import app_settings
from ..storage.types import STARTED_AT_NS_MAX, SessionId

# A cursor's position: the start time, then (since the id breaks ties) the
# session id as 32 hex digits. A position with the time alone, as cursors
# handed out before the id was added, is still read.
_POSITION = re.compile(r"([0-9]{1,20})(?:\.([0-9a-f]{32}))?")
_MAX_DIGITS = len(str(STARTED_AT_NS_MAX))


class ExecutionSessionCursorPagination(CursorPagination):
    """Pages by ``started_at_ns`` descending; the session id breaks ties.

    A cursor encodes a position, not an offset into the table, so sessions
    inserted while a client pages do not shift or repeat its pages. The
    position is the pair (start time, session id): any number of sessions
    with one start time page through, each once. The page size is
    ``SESSIONS_APP["PAGE_SIZE"]``; ``?page_size=`` may ask for up to
    ``SESSIONS_APP["MAX_PAGE_SIZE"]``. A cursor this API did not give out is
    a 404.
    """

    ordering: tuple[str, ...] = ("-started_at_ns", "-session_id")
    page_size_query_param = "page_size"

    def __init__(self) -> None:
        self.page_size = app_settings.PAGE_SIZE
        self.max_page_size = app_settings.MAX_PAGE_SIZE

    def get_page_size(self, request: Any) -> int:
        """``?page_size=`` if given: a positive integer (above the maximum: the maximum); else a 400."""
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return int(app_settings.PAGE_SIZE)
        digits = text.lstrip("0") if text.isascii() and text.isdigit() else None
        if not digits:  # not digits, or zero
            raise ValidationError(
                {self.page_size_query_param: [f"Must be a whole number from 1; got {text[:40]!r}."]}
            )
        maximum = int(app_settings.MAX_PAGE_SIZE)
        # Past Python's int-string limit int() raises: no need to read more than the maximum's digits.
        return maximum if len(digits) > len(str(maximum)) else min(int(digits), maximum)

    def decode_cursor(self, request: Any) -> Cursor | None:
        cursor: Cursor | None = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            _parse_position(str(cursor.position), self.invalid_cursor_message)
        return cursor

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any] | None:
        """DRF's ``CursorPagination.paginate_queryset``, filtering on the (start time, id) pair."""
        self.request = request
        self.page_size = self.get_page_size(request)
        self.base_url = request.build_absolute_uri()
        self.ordering = self.get_ordering(request, queryset, view)
        self.cursor = self.decode_cursor(request)
        current_position: Any  # a position string; DRF's stubs say int
        following_position: Any
        if self.cursor is None:
            offset, reverse, current_position = 0, False, None
        else:
            offset, reverse, current_position = self.cursor

        queryset = queryset.order_by(*(_reverse_ordering(self.ordering) if reverse else self.ordering))
        if current_position is not None:
            started, session_id = _parse_position(str(current_position), self.invalid_cursor_message)
            # Ordering is descending: forward pages go down, reversed ones up.
            op = "gt" if reverse else "lt"
            after = Q(**{f"started_at_ns__{op}": started})
            if session_id is not None:
                after |= Q(started_at_ns=started, **{f"session_id__{op}": session_id})
            queryset = queryset.filter(after)

        results = list(queryset[offset : offset + self.page_size + 1])
        self.page = list(results[: self.page_size])
        if len(results) > len(self.page):
            has_following_position = True
            following_position = self._get_position_from_instance(results[-1], self.ordering)
        else:
            has_following_position = False
            following_position = None

        if reverse:
            self.page = list(reversed(self.page))
            self.has_next = (current_position is not None) or (offset > 0)
            self.has_previous = has_following_position
            if self.has_next:
                self.next_position = current_position
            if self.has_previous:
                self.previous_position = following_position
        else:
            self.has_next = has_following_position
            self.has_previous = (current_position is not None) or (offset > 0)
            if self.has_next:
                self.next_position = following_position
            if self.has_previous:
                self.previous_position = current_position

        if (self.has_previous or self.has_next) and self.template is not None:
            self.display_page_controls = True
        return self.page

    def _get_position_from_instance(self, instance: Any, ordering: Any) -> str:
        if isinstance(instance, dict):
            started, session_id = instance["started_at_ns"], instance["session_id"]
        else:
            started, session_id = instance.started_at_ns, instance.session_id
        return f"{int(started)}.{SessionId(session_id).hex()}"

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Results per page, from 1; above {self.max_page_size} (the maximum) gives the maximum."
                )
        return parameters


def _parse_position(position: str, invalid: Any) -> tuple[int, SessionId | None]:
    """(start time, session id or None) from a cursor's position; ``NotFound`` for anything else."""
    match = _POSITION.fullmatch(position)
    if match is None or len(match[1]) > _MAX_DIGITS or int(match[1]) > STARTED_AT_NS_MAX:
        raise NotFound(invalid)
    return int(match[1]), None if match[2] is None else SessionId(bytes.fromhex(match[2]))
