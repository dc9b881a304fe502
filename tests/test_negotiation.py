"""``ExecutionSessionContentNegotiation`` chooses exactly what DRF's own negotiation chooses."""

import pytest
from django.test import RequestFactory
from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.request import Request
from rest_framework.settings import api_settings

from sessions_app.api.negotiation import ExecutionSessionContentNegotiation

ACCEPTS = [
    None,
    "*/*",
    "application/json",
    "text/html",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
    "application/json; indent=4",
    "*/*; indent=2",
]


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("query", ["", "format=json", "format=api", "agent_id=1"])
def test_the_shortcut_agrees_with_drf(accept, query):
    renderers = [renderer() for renderer in api_settings.DEFAULT_RENDERER_CLASSES]
    assert len(renderers) > 1  # JSON first, the browsable API second: a choice to make
    headers = {} if accept is None else {"HTTP_ACCEPT": accept}
    request = Request(RequestFactory().get("/api/sessions/x/" + ("?" + query if query else ""), **headers))

    def choice(negotiation) -> tuple:
        try:
            renderer, media_type = negotiation.select_renderer(request, renderers)
        except NotAcceptable:
            return ("406",)
        return type(renderer), media_type

    assert choice(ExecutionSessionContentNegotiation()) == choice(DefaultContentNegotiation())
