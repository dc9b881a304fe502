"""ASGI entry point: ``uvicorn aa_project.asgi:application``."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")
# An ASGI server: the API's detail calls run on the event loop (README, "Production").
os.environ.setdefault("SESSIONS_ASYNC_DETAIL_VIEW", "1")

application = get_asgi_application()
