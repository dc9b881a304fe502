"""The ASGI lifespan protocol for the host project: at start-up, load, then freeze.

Django's ASGI handler refuses lifespan scopes (uvicorn then goes on without
them). ``Lifespan`` answers them in front of the application: at
``lifespan.startup``, before the first request, ``load_and_freeze`` builds
what the first request would otherwise build (the URL patterns and, when
the edge serves, its plan), collects, and moves every object alive into
the collector's permanent generation (``gc.freeze()``). Those objects live
as long as the process; frozen, no later collection walks them, so the
full collection that a 10,000-record bulk call sets off walks only what
requests made (31-34 ms before, 2-3 ms after, timed with a
``gc.callbacks`` hook in the server during ``benchmarks/client_bench.py``'s
calls).

Nothing happens at import: a process that imports ``aa_project.asgi``
without serving it (a test, a benchmark) keeps its collector as it was.
"""

from __future__ import annotations

import gc
import logging
from typing import TYPE_CHECKING, Any

from django.urls import get_resolver

from sessions_app.conf import app_settings

if TYPE_CHECKING:
    from sessions_app.asgi import SessionsEdge

logger = logging.getLogger(__name__)

Scope = dict[str, Any]


def load_and_freeze(edge: SessionsEdge | None = None) -> None:
    """Load the URL patterns and ``edge``'s plan, collect, then ``gc.freeze()``.

    A WSGI server has no lifespan: under gunicorn, call this from the
    ``post_worker_init`` hook of its configuration file (or, with
    ``--preload``, from ``when_ready``, in the master before it forks, so
    that the workers share the frozen pages).
    """
    get_resolver().reverse_dict  # noqa: B018 - imports every URLconf and fills the resolver's tables
    if edge is not None and app_settings.EDGE:
        edge.plan()
    gc.collect()  # garbage frozen would never be collected
    gc.freeze()


class Lifespan:
    """``app`` with the lifespan protocol answered: ``load_and_freeze`` at start-up."""

    def __init__(self, app: SessionsEdge) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            return await self.app(scope, receive, send)
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    load_and_freeze(self.app)
                except Exception:
                    # Only an optimisation: serve without it rather than not at all.
                    logger.exception("start-up: loading and freezing failed; serving without it")
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
