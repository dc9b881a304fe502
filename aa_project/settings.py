"""Settings of the host project that runs ``sessions_app``.

Everything that differs between machines comes from the environment:

- ``DATABASE_URL``: any URL dj-database-url understands; default SQLite in
  ``db.sqlite3`` beside ``manage.py``. Example:
  ``postgres://postgres@127.0.0.1:5432/test``.
- ``DJANGO_SECRET_KEY``, ``DJANGO_DEBUG`` (``1``/``0``),
  ``DJANGO_ALLOWED_HOSTS`` (comma-separated).
- ``DJANGO_REDIS_URL``: the cache in Redis (shared by worker processes).
- ``DJANGO_NUM_PROXIES``: proxies in front that append to X-Forwarded-For.
- ``DJANGO_DB_PREPARE_THRESHOLD``: PostgreSQL prepared statements after this
  many uses (5); empty turns them off (PgBouncer in transaction mode).

The defaults are safe for local development only: debug on, a development
secret key, loopback hosts.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

import sessions_app

BASE_DIR = Path(__file__).resolve().parent.parent

DEVELOPMENT_SECRET_KEY = "django-insecure-development-only-key-do-not-deploy"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"{name} must be one of 1/0, true/false, yes/no, on/off; got {value!r}")


SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DJANGO_DEBUG", True)
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_DEBUG is off but DJANGO_SECRET_KEY is not set: refusing to run in production "
        "with the development secret key. Set DJANGO_SECRET_KEY to a long random string."
    )
ALLOWED_HOSTS = [
    host.strip()
    for host in os.environ.get("DJANGO_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1],testserver").split(",")
    if host.strip()
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "servestatic",
    "rest_framework",
    "rest_framework.authtoken",
    "rest_framework_api_key",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "sessions_app",
    # The host project's own checks (aa_project/middleware.py).
    "aa_project",
]

# Django's own middleware, adapted (aa_project/middleware.py): under ASGI
# the hooks that only compute on the request and the response run in the
# event loop, and a thread is taken only for a session save or the message
# storage; under WSGI each is Django's class. Static files: ServeStatic.
MIDDLEWARE = [
    "aa_project.middleware.SecurityMiddleware",
    "aa_project.middleware.StaticFilesMiddleware",
    "aa_project.middleware.SessionMiddleware",
    "aa_project.middleware.CommonMiddleware",
    "aa_project.middleware.CsrfViewMiddleware",
    "aa_project.middleware.AuthenticationMiddleware",
    "aa_project.middleware.MessageMiddleware",
    "aa_project.middleware.XFrameOptionsMiddleware",
]

# Django's deploy checks look for its middleware by dotted path; the
# adapters' own check runs them again with each adapter read as Django's
# class, and raises aa_project.W001-W003 when one is truly missing.
SILENCED_SYSTEM_CHECKS = ["security.W001", "security.W002", "security.W003"]

ROOT_URLCONF = "aa_project.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "aa_project.wsgi.application"
ASGI_APPLICATION = "aa_project.asgi.application"

# CONN_MAX_AGE stays 0: under ASGI every request runs its sync code in a
# thread of its own, and persistent connections would pile up, one per
# thread, until the server refuses more. PostgreSQL reuses connections
# through Django's own pool (psycopg_pool) instead.
# An empty DATABASE_URL counts as unset.
# CONN_HEALTH_CHECKS: a connection is checked before it is reused, and on
# PostgreSQL Django's pool checks each one before lending it, so a server
# that dropped its connections (a restart, a failover) costs no failed call.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{BASE_DIR / 'db.sqlite3'}",
        conn_max_age=0,
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.mysql":
    # MySQL/MariaDB through PyMySQL: pure Python, so it installs from PyPI
    # on a fresh machine (mysqlclient needs the C client headers from the
    # OS). Django checks for mysqlclient's version; PyMySQL speaks its API.
    import pymysql

    pymysql.version_info = (2, 2, 7, "final", 0)
    pymysql.install_as_MySQLdb()
    DATABASES["default"].setdefault("OPTIONS", {}).update({"charset": "utf8mb4"})
    DATABASES["default"].setdefault("TEST", {}).update({"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_bin"})
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options["pool"] = {"min_size": 2, "max_size": 20, "timeout": 10}
    # Server-side prepared statements after five uses (psycopg's own default)
    # on the store's native path (Django's own cursors bind on the client and
    # prepare nothing): right for a direct connection. Behind PgBouncer in
    # transaction mode set
    # DJANGO_DB_PREPARE_THRESHOLD to "" (off): there a statement prepared on
    # one server connection is missing on the next (docs/deployment.md).
    # A prepare_threshold in DATABASE_URL's query wins.
    _threshold = os.environ.get("DJANGO_DB_PREPARE_THRESHOLD", "5").strip()
    _options.setdefault("prepare_threshold", int(_threshold) if _threshold else None)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Separate connections (the store's, the test client's) need a file,
    # not a private in-memory database, to see each other's rows; WAL lets
    # readers run beside a writer.
    # SQLITE_TEST_DATABASE: another file, for two test runs side by side.
    DATABASES["default"].setdefault("TEST", {})["NAME"] = os.environ.get("SQLITE_TEST_DATABASE") or str(
        BASE_DIR / "test_db.sqlite3"
    )
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }

# DJANGO_REDIS_URL (redis://127.0.0.1:6379/0): Django's cache in Redis,
# shared by every worker process, so a revoked key or token is refused by
# all of them on the next request (README, "Security"). Unset: each
# process has its own in-memory cache.
if os.environ.get("DJANGO_REDIS_URL"):
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": os.environ["DJANGO_REDIS_URL"],
            # One pool per worker process (sessions_app.caching shares the
            # cache object), bounded: a caller waits at most 1 s for one of
            # its 16 connections, then goes on without the cache.
            "OPTIONS": {
                "pool_class": "redis.BlockingConnectionPool",
                "max_connections": int(os.environ.get("DJANGO_REDIS_MAX_CONNECTIONS", "16")),
                "timeout": 1,
                "socket_connect_timeout": 1,
                "socket_timeout": 1,
            },
        }
    }

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# ServeStatic (aa_project.middleware.StaticFilesMiddleware) serves the
# admin's and the API docs' static files under any server (uvicorn
# included), in the event loop under ASGI. In DEBUG it reads them straight
# from the apps; in production from STATIC_ROOT, filled by `manage.py
# collectstatic` (compressed copies beside each file).
STATIC_ROOT = os.environ.get("DJANGO_STATIC_ROOT") or (None if DEBUG else str(BASE_DIR / "staticfiles"))
SERVESTATIC_USE_FINDERS = DEBUG
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "servestatic.storage.CompressedStaticFilesStorage"},
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# The app's settings (sessions_app/conf.py has every key), from the environment.
SESSIONS_APP = {
    "MAX_BULK": int(os.environ.get("SESSIONS_MAX_BULK", "10000")),
    # Under ASGI (asgi.py), sessions_app.asgi.SessionsEdge answers the API's
    # hot calls ahead of Django; SESSIONS_EDGE=0 hands every request to Django.
    "EDGE": env_bool("SESSIONS_EDGE", True),
    # Failed authentications per client address a minute before 429 (README, "Security").
    "AUTH_FAILURE_RATE": os.environ.get("SESSIONS_AUTH_FAILURE_RATE", "20/min"),
}

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: an anonymous API call then gets 401 with a
        # "WWW-Authenticate: Token" challenge rather than a bare 403. The
        # cached variant remembers a token's user for
        # SESSIONS_APP["AUTH_CACHE_TIMEOUT"] seconds (README, "Security").
        "sessions_app.api.authentication.CachedTokenAuthentication",
        # Agents' keys: "Authorization: Api-Key <prefix>.<secret>", scoped
        # to the key's agents (README, "Security").
        "sessions_app.api.authentication.AgentKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # How many proxies in front of the server append to X-Forwarded-For.
    # 0: the client is the connection's address (REMOTE_ADDR), whatever
    # X-Forwarded-For says; behind one proxy that sets it (nginx with
    # proxy_add_x_forwarded_for), 1. Throttles, and the count of failed
    # authentications, identify clients by this address.
    "NUM_PROXIES": int(os.environ.get("DJANGO_NUM_PROXIES", "0")),
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's AutoSchema, with request bodies listed as JSON only
    # (the browsable API's form is still accepted): clients generated from
    # the schema (openapi-python-client) then import and work unedited.
    "DEFAULT_SCHEMA_CLASS": "sessions_app.api.schema.JSONRequestBodiesAutoSchema",
    # DRF's anon and user throttles, counting in O(1) per request (sessions_app.api.throttling).
    "DEFAULT_THROTTLE_CLASSES": [
        "sessions_app.api.throttling.AnonRateThrottle",
        "sessions_app.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "anon": os.environ.get("API_THROTTLE_ANON", "60/minute"),
        "user": os.environ.get("API_THROTTLE_USER", "100000/minute"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Agent execution sessions API",
    "DESCRIPTION": "Save, load and delete the execution-session records of an agent-governance runtime.",
    "VERSION": sessions_app.__version__,
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the drf-spectacular-sidecar package, not a CDN: the
    # docs page works offline and under a strict CSP.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Production hardening, on whenever DEBUG is off. Behind a TLS-terminating
# proxy, set DJANGO_SECURE_PROXY_SSL_HEADER=1 so Django trusts its
# X-Forwarded-Proto header.
if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_SECURE_HSTS_SECONDS", str(365 * 24 * 3600)))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
    if env_bool("DJANGO_SECURE_PROXY_SSL_HEADER", False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

LOGGING_CONFIG = "aa_project.logconfig.configure"  # dictConfig, less each record's unused extras
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "loggers": {
        "sessions_app": {"handlers": ["console"], "level": os.environ.get("SESSIONS_APP_LOG_LEVEL", "INFO")}
    },
}
