"""ASGI entry point: ``uvicorn aa_project.asgi:application``.

The API's hot calls are answered by ``sessions_app.asgi.SessionsEdge``
ahead of Django; everything else is Django's application (README,
"What each server runs").
"""

import gc
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")

django_application = get_asgi_application()

from sessions_app.asgi import SessionsEdge  # noqa: E402 - imports models: after Django's setup

application = SessionsEdge(django_application)

# What is loaded by now lives as long as the process. Frozen, it is left out
# of every later collection: the full collection a 10,000-record bulk call
# sets off walks only what requests made (31 ms -> 3 ms, benchmarks/client_bench.py).
gc.freeze()
