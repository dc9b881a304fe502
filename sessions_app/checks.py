"""System checks: each misconfiguration a user can make, with its own id and its fix."""

from __future__ import annotations

import re
from typing import Any

from django.apps import apps
from django.core.checks import Error, Tags, Warning, register
from django.db import connections
from django.utils.module_loading import import_string

from .conf import DEFAULTS, SETTINGS_NAME, app_settings

REQUIRED_APPS = {
    "rest_framework": "djangorestframework",
    "django_filters": "django-filter",
    "drf_spectacular": "drf-spectacular",
}


@register(Tags.compatibility)
def check_required_apps(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    return [
        Error(
            f"sessions_app needs '{label}' in INSTALLED_APPS (package {package}).",
            hint=f"Add '{label}' to INSTALLED_APPS; `pip install {package}` if it is missing.",
            id="sessions_app.E001",
        )
        for label, package in REQUIRED_APPS.items()
        if not apps.is_installed(label)
    ]


@register()
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    unknown = sorted(set(app_settings.user_settings) - set(DEFAULTS))
    if unknown:
        errors.append(
            Warning(
                f"{SETTINGS_NAME} has unknown keys: {', '.join(unknown)}.",
                hint=f"Known keys: {', '.join(DEFAULTS)}. Check the spelling.",
                id="sessions_app.W001",
            )
        )
    try:
        from .storage import SessionStore

        store_class = import_string(app_settings.STORE)
        if not (isinstance(store_class, type) and issubclass(store_class, SessionStore)):
            raise TypeError("not a SessionStore subclass")
    except (ImportError, TypeError) as exc:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['STORE'] = {app_settings.STORE!r} "
                f"is not an importable SessionStore ({exc}).",
                hint="Use a dotted path such as 'sessions_app.storage.DjangoSessionStore'.",
                id="sessions_app.E002",
            )
        )
    from django.conf import settings

    for key in ("CACHE_ALIAS", "AUTH_CACHE_ALIAS"):
        cache_alias = getattr(app_settings, key)
        if cache_alias not in settings.CACHES:
            errors.append(
                Error(
                    f"{SETTINGS_NAME}[{key!r}] = {cache_alias!r} is not in CACHES.",
                    hint=f"Define CACHES[{cache_alias!r}] or use one of {sorted(settings.CACHES)}.",
                    id="sessions_app.E003",
                )
            )
    health = app_settings.HEALTH_TIMEOUT
    if not isinstance(health, (int, float)) or isinstance(health, bool) or health <= 0:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['HEALTH_TIMEOUT'] must be a number of seconds > 0, got {health!r}.",
                hint=f"Below the balancer's check interval; the default is {DEFAULTS['HEALTH_TIMEOUT']}.",
                id="sessions_app.E009",
            )
        )
    timeout = app_settings.AUTH_CACHE_TIMEOUT
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout < 0:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['AUTH_CACHE_TIMEOUT'] must be a number of seconds >= 0, got {timeout!r}.",
                hint=f"0 turns the auth cache off; the default is {DEFAULTS['AUTH_CACHE_TIMEOUT']}.",
                id="sessions_app.E008",
            )
        )
    rate = app_settings.AUTH_FAILURE_RATE
    if rate is not None and not (isinstance(rate, str) and re.fullmatch(r"[1-9]\d*/[smhd]\w*", rate)):
        errors.append(
            Error(
                f"{SETTINGS_NAME}['AUTH_FAILURE_RATE'] must be a rate such as '20/min' (a count from 1, "
                f"then s, m, h or d), or None; got {rate!r}.",
                hint=f"None turns the limit off; the default is {DEFAULTS['AUTH_FAILURE_RATE']!r}.",
                id="sessions_app.E012",
            )
        )
    rest_framework = getattr(settings, "REST_FRAMEWORK", {}) or {}
    if "NUM_PROXIES" not in rest_framework:
        errors.append(
            Warning(
                "REST_FRAMEWORK['NUM_PROXIES'] is not set: DRF then identifies a client by the whole "
                "X-Forwarded-For header, which the client writes itself, so it can escape the throttles "
                "and the failed-authentication limit.",
                hint="Set it to the number of proxies in front that append to X-Forwarded-For (0: none).",
                id="sessions_app.W002",
            )
        )
    alias = app_settings.DATABASE_ALIAS
    if alias not in settings.DATABASES:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['DATABASE_ALIAS'] = {alias!r} is not in DATABASES.",
                hint=f"Set DATABASE_ALIAS to one of {sorted(settings.DATABASES)}.",
                id="sessions_app.E004",
            )
        )
    for key in ("PAGE_SIZE", "MAX_PAGE_SIZE", "POOL_SIZE", "MAX_BULK"):
        value = getattr(app_settings, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            errors.append(
                Error(
                    f"{SETTINGS_NAME}[{key!r}] must be a positive integer, got {value!r}.",
                    hint=f"The default is {DEFAULTS[key]}.",
                    id="sessions_app.E005",
                )
            )
    errors += _check_edge()
    for key in ("PERMISSION_CLASSES", "THROTTLE_CLASSES"):
        for path in app_settings.user_settings.get(key, []):
            try:
                import_string(path)
            except ImportError as exc:
                errors.append(
                    Error(
                        f"{SETTINGS_NAME}[{key!r}] names {path!r}, which does not import ({exc}).",
                        hint="Give dotted paths to DRF permission or throttle classes.",
                        id="sessions_app.E006",
                    )
                )
    return errors


def _check_edge() -> list[Any]:
    value = app_settings.EDGE
    if not isinstance(value, bool):
        return [
            Error(
                f"{SETTINGS_NAME}['EDGE'] must be True or False, got {value!r}.",
                hint="True (the default) lets sessions_app.asgi.SessionsEdge answer the API's hot calls.",
                id="sessions_app.E010",
            )
        ]
    return []


SUPPORTED_VENDORS = {"postgresql", "sqlite", "mysql"}


@register(Tags.database)
def check_database(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """Runs with ``manage.py check --database <alias>`` (and before migrate)."""
    errors: list[Any] = []
    for alias in databases or []:
        vendor = connections[alias].vendor
        if vendor not in SUPPORTED_VENDORS:
            errors.append(
                Error(
                    f"Database {alias!r} is {vendor}; sessions_app stores 16-byte binary ids and "
                    "signed 64-bit "
                    f"integers on PostgreSQL, SQLite and MySQL/MariaDB only.",
                    hint="Point SESSIONS_APP['DATABASE_ALIAS'] at a supported database.",
                    id="sessions_app.E007",
                )
            )
    return errors
