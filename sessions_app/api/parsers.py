"""Request parsers that turn every malformed body into a 400."""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class SafeJSONParser(JSONParser):
    """DRF's JSON parser, plus a 400 for nesting deep enough to exhaust the recursion limit.

    ``json.loads`` raises ``RecursionError`` (not ``ValueError``) on a body
    like ``[[[[...]]]]`` tens of thousands deep, which DRF would let through
    as a 500. No session record nests at all.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError("JSON parse error - nested too deeply.") from None
