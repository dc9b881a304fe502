"""The app's settings, read in one place with defaults (as DRF's ``api_settings``).

A project configures the app with one dict::

    SESSIONS_APP = {
        "STORE": "sessions_app.storage.DjangoSessionStore",
        "PAGE_SIZE": 100,
    }

Every key is optional; ``app_settings.KEY`` gives the project's value or the
default, and follows ``override_settings`` in tests.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.utils.module_loading import import_string

SETTINGS_NAME = "SESSIONS_APP"

DEFAULTS: dict[str, Any] = {
    # Dotted path of the store class ``get_session_store()`` builds, and its
    # keyword arguments (for CachedSessionStore, "backing_store" may be a path).
    "STORE": "sessions_app.storage.DjangoSessionStore",
    "STORE_OPTIONS": {},
    # The Django database alias the default store and the API use.
    "DATABASE_ALIAS": "default",
    # DjangoSessionStore: use the native async path of the database when its
    # driver is installed (psycopg's async pool on PostgreSQL, a dedicated
    # thread on SQLite); otherwise, or with False, Django's cursor through
    # sync_to_async. POOL_SIZE and POOL_TIMEOUT (seconds to wait for a
    # connection) size the PostgreSQL pool of each event loop. The native
    # PostgreSQL path reads the alias' DATABASES OPTIONS as Django does:
    # server-side prepared statements stay off unless
    # OPTIONS["prepare_threshold"] is set (leave it unset or None behind
    # PgBouncer in transaction mode; 5 when connected straight to PostgreSQL).
    "NATIVE_ASYNC": True,
    "POOL_SIZE": 10,
    "POOL_TIMEOUT": 5.0,
    # CachedSessionStore: the cache alias and the timeout in seconds.
    "CACHE_ALIAS": "default",
    "CACHE_TIMEOUT": 300,
    # REST API: how long (seconds) the answers of CachedTokenAuthentication
    # and ExecutionSessionPermissions may be reused, in which cache; 0 turns
    # the cache off. Changes saved through Django retire them at once.
    "AUTH_CACHE_TIMEOUT": 30,
    "AUTH_CACHE_ALIAS": "default",
    # REST API: failed authentications (a bad token or key) allowed per
    # client address (DRF's get_ident, which honours NUM_PROXIES) before
    # that address gets 429 until the window passes, whatever it sends;
    # DRF's rate format ("20/min", "100/hour"); None turns it off.
    "AUTH_FAILURE_RATE": "20/min",
    # GET /api/health/: seconds each check (database, cache) may take.
    "HEALTH_TIMEOUT": 3.0,
    # REST API under ASGI: whether sessions_app.asgi.SessionsEdge (when the
    # project's asgi.py wraps its application in it) answers the hot calls
    # ahead of Django; False hands every request to Django.
    "EDGE": True,
    # REST API: the most records (or ids) one bulk call may carry.
    "MAX_BULK": 10_000,
    # REST API: page size of the list, and the DRF policy classes by dotted path.
    "PAGE_SIZE": 100,
    "MAX_PAGE_SIZE": 1000,
    "PERMISSION_CLASSES": ["sessions_app.api.permissions.ExecutionSessionPermissions"],
    # DRF's AnonRateThrottle and UserRateThrottle, with counters (api/throttling.py).
    "THROTTLE_CLASSES": [
        "sessions_app.api.throttling.AnonRateThrottle",
        "sessions_app.api.throttling.UserRateThrottle",
    ],
}

IMPORT_STRINGS = {"PERMISSION_CLASSES", "THROTTLE_CLASSES"}


class AppSettings:
    """Attribute access to ``settings.SESSIONS_APP`` merged over ``DEFAULTS``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    @property
    def user_settings(self) -> dict[str, Any]:
        return getattr(settings, SETTINGS_NAME, None) or {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in DEFAULTS:
            raise AttributeError(f"{SETTINGS_NAME} has no setting {name!r}; known: {', '.join(DEFAULTS)}")
        if name not in self._cache:
            value = self.user_settings.get(name, DEFAULTS[name])
            if name in IMPORT_STRINGS:
                value = [import_string(path) if isinstance(path, str) else path for path in value]
            self._cache[name] = value
        return self._cache[name]

    def reload(self) -> None:
        self._cache.clear()


app_settings = AppSettings()


def _reload(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTINGS_NAME:
        app_settings.reload()


setting_changed.connect(_reload)
