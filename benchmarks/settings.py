"""Settings for benchmark processes: the host project's, pointed at BENCH_DATABASE_URL."""

import os

import dj_database_url

from aa_project.settings import *  # noqa: F403
from aa_project.settings import BASE_DIR, REST_FRAMEWORK, SESSIONS_APP

DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "benchmarks.urls"
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("BENCH_DATABASE_URL", f"sqlite:///{BASE_DIR / 'bench.sqlite3'}")
    )
}
if DATABASES["default"]["ENGINE"].endswith("postgresql"):
    DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 20, "timeout": 10}}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
SESSIONS_APP = {
    **SESSIONS_APP,
    "POOL_SIZE": int(os.environ.get("BENCH_POOL_SIZE", "16")),
    "THROTTLE_CLASSES": [],
}
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}
LOGGING = {"version": 1, "disable_existing_loggers": False}
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
    "redis": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14"),
        "KEY_PREFIX": "sessions-bench",
    },
}
# BENCH_MIDDLEWARE: "project" (default) keeps the host project's MIDDLEWARE;
# "none" serves with MIDDLEWARE = [] (benchmarks/middleware_bench.py's
# baseline); anything else is a comma-separated list of dotted paths.
_bench_middleware = os.environ.get("BENCH_MIDDLEWARE", "project")
if _bench_middleware == "none":
    MIDDLEWARE: list[str] = []
elif _bench_middleware != "project":
    MIDDLEWARE = [path.strip() for path in _bench_middleware.split(",") if path.strip()]
