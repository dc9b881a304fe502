"""WSGI entry point: ``gunicorn aa_project.wsgi``."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "aa_project.settings")

application = get_wsgi_application()

# As in asgi.py: what is loaded by now is left out of later collections
# (and, under a preloading server that forks, its pages stay shared).
gc.freeze()
