"""The app's API URLs; a project mounts them with ``path("api/", include("sessions_app.api.urls"))``.

- ``sessions/`` and ``sessions/{session_id}/``: the viewset;
- ``schema/``: the OpenAPI 3 schema; ``docs/``: Swagger UI over it;
- ``health/``: for load balancers, no authentication;
- ``metrics/``: Prometheus metrics, for users with the ``view`` permission.
"""

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.routers import SimpleRouter

from .health import health
from .metrics import MetricsView
from .views import ExecutionSessionViewSet

app_name = "sessions_app_api"

router = SimpleRouter()
router.register("sessions", ExecutionSessionViewSet, basename="session")

urlpatterns = [
    path("", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="sessions_app_api:schema"), name="docs"),
    path("health/", health, name="health"),
    path("metrics/", MetricsView.as_view(), name="metrics"),
]
