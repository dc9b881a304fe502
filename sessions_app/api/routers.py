"""``SessionRouter``: DRF's ``SimpleRouter``, serving the detail route on the event loop when asked."""

from __future__ import annotations

from typing import Any

from rest_framework.routers import Route, SimpleRouter

from ..conf import app_settings


class SessionRouter(SimpleRouter):
    """``SimpleRouter`` whose detail route (``{prefix}/{lookup}/``) may be an async view.

    ``async_detail`` defaults to ``SESSIONS_APP["ASYNC_DETAIL_VIEW"]``. When
    on, the detail route's view is the viewset's ``as_view(...,
    serve_async=True)``: a coroutine function that Django under ASGI awaits
    on the event loop (``ExecutionSessionViewSet.adispatch``). The URLs,
    their names and the schema are the same either way.
    """

    def __init__(self, *args: Any, async_detail: bool | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if async_detail is None:
            async_detail = bool(app_settings.ASYNC_DETAIL_VIEW)
        self.async_detail = async_detail
        if async_detail:
            self.routes = [_served_async(route) for route in self.routes]


def _served_async(route: Any) -> Any:
    if isinstance(route, Route) and route.detail:
        return route._replace(initkwargs={**route.initkwargs, "serve_async": True})
    return route
