"""``GET /api/metrics/``: the store's Prometheus metrics, for users with the ``view`` permission.

Prometheus sends ``Authorization: Token ...`` (``authorization`` in its
scrape config). With several worker processes, set
``PROMETHEUS_MULTIPROC_DIR`` (see ``sessions_app.storage.metrics``); the
answer then adds up every worker's numbers.
"""

from __future__ import annotations

import os
from typing import Any

import prometheus_client
from django.http import HttpResponse
from prometheus_client import multiprocess
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.views import APIView

from ..conf import app_settings
from ..models import ExecutionSession


class PrometheusTextRenderer(BaseRenderer):
    """Lets a client that accepts only Prometheus' text format be served (errors as one line)."""

    media_type = "text/plain"
    format = "txt"
    charset = "utf-8"

    def render(
        self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None
    ) -> bytes:
        detail = data.get("detail", data) if isinstance(data, dict) else data
        return f"# {detail}\n".encode()


class MetricsView(APIView):
    """The metrics in Prometheus' text exposition format (users with the view permission; no agent key)."""

    queryset = ExecutionSession.objects.none()  # names the model whose view permission is needed
    schema = None  # operational, not part of the sessions API's contract
    renderer_classes = [JSONRenderer, PrometheusTextRenderer]

    def get_permissions(self) -> list[Any]:
        return [permission() for permission in app_settings.PERMISSION_CLASSES]

    def get_throttles(self) -> list[Any]:
        return [throttle() for throttle in app_settings.THROTTLE_CLASSES]

    def get(self, request: Request) -> HttpResponse:
        registry: prometheus_client.CollectorRegistry = prometheus_client.REGISTRY
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            registry = prometheus_client.CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return HttpResponse(
            prometheus_client.generate_latest(registry), content_type=prometheus_client.CONTENT_TYPE_LATEST
        )
