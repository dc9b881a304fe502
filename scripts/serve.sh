#!/usr/bin/env bash
# Install everything, migrate, and serve the app on http://127.0.0.1:8000
# (admin at /admin/, API at /api/, docs at /api/docs/) under uvicorn.
#
# To log into the admin, set DJANGO_SUPERUSER_USERNAME and
# DJANGO_SUPERUSER_PASSWORD (and optionally DJANGO_SUPERUSER_EMAIL) before
# the first run, or run `.venv/bin/python manage.py createsuperuser`.
#
# WEB_CONCURRENCY: worker processes (default 1). With more than one, the
# Prometheus metrics of every worker are added up through
# PROMETHEUS_MULTIPROC_DIR, which this script sets (and empties) when unset;
# uvicorn's supervisor starts a new worker when one dies.
# --no-proxy-headers: uvicorn would otherwise take the client's address from
# X-Forwarded-For on loopback connections; Django decides whom to believe
# (DJANGO_NUM_PROXIES, docs/security.md).
# SERVER_READ_TIMEOUT: seconds a client has to send a whole request (10):
# a stalled or slow client's connection is closed then (aa_project/server.py).
# Static files (the admin's, the API docs'): ServeStatic, in the event loop
# (aa_project/middleware.py); with DJANGO_DEBUG=0 run `manage.py
# collectstatic` first (docs/deployment.md, "Static files").
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
.venv/bin/python manage.py migrate --noinput
if [ -n "${DJANGO_SUPERUSER_USERNAME:-}" ] && [ -n "${DJANGO_SUPERUSER_PASSWORD:-}" ]; then
  .venv/bin/python manage.py createsuperuser --noinput --email "${DJANGO_SUPERUSER_EMAIL:-admin@localhost}" 2>/dev/null \
    || echo "serve: superuser ${DJANGO_SUPERUSER_USERNAME} already exists"
fi
WORKERS="${WEB_CONCURRENCY:-1}"
if [ "$WORKERS" -gt 1 ] && [ -z "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  export PROMETHEUS_MULTIPROC_DIR="${TMPDIR:-/tmp}/sessions_app-metrics-${PORT:-8000}"
  rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
fi
exec .venv/bin/uvicorn aa_project.asgi:application --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}" \
  --workers "$WORKERS" --http aa_project.server:ReadTimeoutHttpToolsProtocol --timeout-keep-alive 5 \
  --no-proxy-headers
