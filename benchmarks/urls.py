"""The host project's URLs plus the HTTP benchmark's baseline: a bare async view."""

from django.http import Http404, JsonResponse
from django.urls import path

from aa_project.urls import urlpatterns as project_urlpatterns
from sessions_app.api.serializers import ns_to_iso8601
from sessions_app.storage import DjangoSessionStore, NotFound, SessionId

_store = DjangoSessionStore()


async def bare_session_view(request, session_id: str) -> JsonResponse:
    """The least a Django view can do to answer GET /api/sessions/{id}/: no auth, no DRF."""
    try:
        record = await _store.load(SessionId.parse(session_id))
    except (ValueError, NotFound):
        raise Http404 from None
    return JsonResponse(
        {
            "session_id": str(record.session_id),
            "agent_id": record.agent_id,
            "started_at_ns": str(record.started_at_ns),
            "started_at": ns_to_iso8601(record.started_at_ns),
        }
    )


urlpatterns = [path("bare/sessions/<str:session_id>/", bare_session_view), *project_urlpatterns]
