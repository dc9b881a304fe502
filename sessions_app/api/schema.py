"""How the API's own fields appear in its OpenAPI schema (drf-spectacular extensions).

The 64-bit integers are decimal strings on output, so that no client rounds
them; on input the API takes a string of digits or a JSON integer. The
schema says exactly that, per direction: a generated client reads strings
and may send either, and a schema-driven fuzzer never sends a value the API
refuses, nor the API accepts one the schema forbids.

Request bodies are listed as JSON only (``JSONRequestBodiesAutoSchema``):
the browsable API's urlencoded form is still accepted, but it is a page's
convenience, not part of the API's contract, and a body listed under two
content types breaks generators (openapi-python-client's required
multi-type bodies).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.openapi import AutoSchema

from .fields import decimal_at_most


class BoundedIntegerFieldSchema(OpenApiSerializerFieldExtension):  # type: ignore[no-untyped-call]
    target_class = "sessions_app.api.fields.BoundedIntegerField"
    match_subclasses = True

    def map_serializer_field(self, auto_schema: Any, direction: str) -> dict[str, Any]:
        field = self.target
        digits = {"type": "string", "pattern": decimal_at_most(field.maximum), "example": field.example}
        text = (
            f"{field.description}, as a decimal string (JSON numbers past 2**53 lose digits in JavaScript)."
        )
        if direction == "response":
            return {**digits, "description": text}
        return {
            "oneOf": [digits, {"type": "integer", "minimum": 0, "maximum": field.maximum}],
            "description": text + " Input also takes a JSON integer.",
        }


class AgentKeyAuthenticationScheme(OpenApiAuthenticationExtension):  # type: ignore[no-untyped-call]
    """The ``Api-Key`` scheme beside DRF's ``Token`` and the session cookie."""

    target_class = "sessions_app.api.authentication.AgentKeyAuthentication"
    name = "agentKeyAuth"
    match_subclasses = True

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "An agent key, prefixed with `Api-Key`: `Api-Key <prefix>.<secret>` "
            "(manage.py create_agent_key). The call acts for the key's agents only, within its scopes.",
        }


class JSONRequestBodiesAutoSchema(AutoSchema):
    """drf-spectacular's ``AutoSchema``, listing only the JSON parsers' media types for request bodies.

    The viewset also parses urlencoded forms, for the browsable API's page;
    this changes what the schema says, not what the view accepts. A view with
    no JSON parser keeps its full list. Set it as DRF's
    ``DEFAULT_SCHEMA_CLASS`` (the host project's settings do).
    """

    def map_parsers(self) -> list[Any]:
        media_types: list[Any] = super().map_parsers()
        return [m for m in media_types if _is_json(m)] or media_types


def _is_json(media_type: str) -> bool:
    essence = media_type.partition(";")[0].strip().lower()
    return essence == "application/json" or essence.endswith("+json")
