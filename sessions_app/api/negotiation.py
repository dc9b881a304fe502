"""Content negotiation: DRF's, answering the common case without parsing."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer
from rest_framework.request import Request


class ExecutionSessionContentNegotiation(DefaultContentNegotiation):
    """``DefaultContentNegotiation`` with a shortcut for agents' calls.

    A request with no ``Accept`` header or ``Accept: */*`` (httpx, curl,
    wrk), no query string and no format suffix gets the first renderer and
    its media type: what DRF's parsing would choose, decided without it
    (about a tenth of a detail call's own cost). Anything else is DRF's.
    """

    def select_renderer(
        self, request: Request, renderers: Iterable[BaseRenderer], format_suffix: str | None = None
    ) -> Any:
        meta = request.META
        if format_suffix is None and meta.get("HTTP_ACCEPT", "*/*") == "*/*" and not meta.get("QUERY_STRING"):
            first = next(iter(renderers), None)
            if first is not None:
                return first, first.media_type
        return super().select_renderer(request, renderers, format_suffix)
