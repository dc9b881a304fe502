"""Cursor pagination: newest start first, stable while rows are inserted."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import CursorPagination

from ..conf import app_settings


class ExecutionSessionCursorPagination(CursorPagination):
    """Pages by ``started_at_ns`` descending; the session id breaks ties.

    A cursor encodes a position, not an offset into the table, so sessions
    inserted while a client pages do not shift or repeat its pages. The
    page size is ``SESSIONS_APP["PAGE_SIZE"]``; ``?page_size=`` may ask for
    up to ``SESSIONS_APP["MAX_PAGE_SIZE"]``.
    """

    ordering = ("-started_at_ns", "-session_id")
    page_size_query_param = "page_size"

    def __init__(self) -> None:
        self.page_size = app_settings.PAGE_SIZE
        self.max_page_size = app_settings.MAX_PAGE_SIZE

    def get_page_size(self, request: Any) -> int:
        """``?page_size=`` if given: a positive integer (above the maximum: the maximum); else a 400."""
        text = request.query_params.get(self.page_size_query_param)
        if text is None:
            return int(app_settings.PAGE_SIZE)
        if not (text.isascii() and text.isdigit() and int(text) >= 1):
            raise ValidationError(
                {self.page_size_query_param: [f"Must be a whole number from 1; got {text[:40]!r}."]}
            )
        return min(int(text), int(app_settings.MAX_PAGE_SIZE))

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters: list[dict[str, Any]] = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"] = {"type": "integer", "minimum": 1}
                parameter["description"] = (
                    f"Results per page, from 1; above {self.max_page_size} (the maximum) gives the maximum."
                )
        return parameters
