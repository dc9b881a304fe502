"""The app's API URLs; a project mounts them with ``path("api/", include("sessions_app.api.urls"))``.

- ``sessions/`` and ``sessions/{session_id}/``: the viewset (under ASGI,
  ``sessions_app.asgi.SessionsEdge`` answers its hot calls ahead of Django);
- ``schema/``: the OpenAPI 3 schema; ``docs/``: Swagger UI over it;
- ``health/``: for load balancers, no authentication;
- ``metrics/``: Prometheus metrics, for users with the ``view`` permission.
"""

from django.urls import URLPattern, URLResolver, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from .health import health
from .metrics import MetricsView
from .views import ExecutionSessionViewSet

app_name = "sessions_app_api"


def api_urlpatterns() -> list[URLPattern | URLResolver]:
    """The API's URL patterns (for a project that mounts them under its own namespace)."""
    router = SimpleRouter()
    router.register("sessions", ExecutionSessionViewSet, basename="session")
    return [
        # The router's patterns themselves, not under include(""): one
        # resolver level less for every API call.
        *router.urls,
        path("schema/", SpectacularAPIView.as_view(), name="schema"),
        path("docs/", SpectacularSwaggerView.as_view(url_name="sessions_app_api:schema"), name="docs"),
        path("health/", health, name="health"),
        path("metrics/", MetricsView.as_view(), name="metrics"),
    ]


urlpatterns = api_urlpatterns()
