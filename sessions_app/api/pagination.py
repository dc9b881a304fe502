"""Cursor pagination: newest start first, stable while rows are inserted."""

from __future__ import annotations

from typing import Any

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
        return super().get_page_size(request) or app_settings.PAGE_SIZE
