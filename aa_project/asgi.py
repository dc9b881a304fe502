"""ASGI entry point: ``uvicorn aa_project.asgi:application``.

The API's hot calls are answered by ``sessions_app.asgi.SessionsEdge``
ahead of Django; everything else is Django's application (README,
"What each server runs").
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")

django_application = get_asgi_application()

from aa_project.lifespan import Lifespan  # noqa: E402 - imports models: after Django's setup
from sessions_app.asgi import SessionsEdge  # noqa: E402

# Lifespan: at the server's start-up, what the first request would build is
# built, then frozen out of later garbage collections (aa_project/lifespan.py).
application = Lifespan(SessionsEdge(django_application))
