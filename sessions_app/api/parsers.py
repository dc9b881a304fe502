"""Request parsers that turn every malformed body into a 400."""

from __future__ import annotations

from typing import Any

import orjson
from django.conf import settings
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


class BulkJSONParser(SafeJSONParser):
    """JSON bodies of the bulk calls, decoded by orjson: ten thousand records a call.

    ``benchmarks/client_bench.py`` measures the bulk calls; decoding their
    bodies with the standard library was a large share of a 10,000-record
    save. orjson takes the same documents (strict JSON: no NaN or
    Infinity, UTF-8 only) and refuses nesting past 1,024 levels, so every
    malformed body is still a 400 (``JSON parse error - ...``).
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        charset = (parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET
        if charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
            return super().parse(stream, media_type, parser_context)
        try:
            return orjson.loads(stream.read() if stream is not None else b"")
        except orjson.JSONDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
