"""``GET /api/health/``: whether this server can reach its session database, for a load balancer.

A plain Django view, not a DRF one: no authentication and no throttling
(a balancer polls it every few seconds), and nothing in the answer a
stranger should not see (no versions, host names or error texts, only
which part failed and how).

- the database: one ``SELECT 1`` through the store's own path, bounded by
  ``SESSIONS_APP["HEALTH_TIMEOUT"]`` seconds even when the host stops
  answering. Its failure makes the answer 503.
- the cache, when a ``CachedSessionStore`` or the API's auth cache uses one:
  a write and a read, bounded the same way. Reported, never failing the
  check on its own: the app falls back to the database without it.
"""

from __future__ import annotations

import asyncio
import logging

from django.http import HttpRequest, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from ..caching import cache_for
from ..conf import app_settings
from ..storage import CachedSessionStore, DjangoSessionStore
from ..storage.errors import StorageError

logger = logging.getLogger("sessions_app.api")


async def _check_database(seconds: float) -> dict[str, str]:
    try:
        async with asyncio.timeout(seconds):
            # A store per check is cheap: every store of an alias shares its path.
            await DjangoSessionStore(app_settings.DATABASE_ALIAS).path.fetchone(("SELECT 1", ()))
    except TimeoutError:
        logger.warning("health: the database did not answer within %ss", seconds)
        return {"status": "unavailable", "reason": "timeout"}
    except StorageError as exc:
        logger.warning("health: the database failed: %s", exc)
        return {"status": "unavailable", "reason": "error"}
    return {"status": "ok"}


def _cache_aliases() -> list[str]:
    aliases = []
    if issubclass(import_string(app_settings.STORE), CachedSessionStore):
        aliases.append(CachedSessionStore.cache_alias_for(app_settings.STORE_OPTIONS.get("cache_alias")))
    if app_settings.AUTH_CACHE_TIMEOUT:
        aliases.append(app_settings.AUTH_CACHE_ALIAS)
    return list(dict.fromkeys(aliases))


async def _check_cache(alias: str, seconds: float) -> dict[str, str]:
    cache = cache_for(alias)
    try:
        async with asyncio.timeout(seconds):
            await cache.aset("sessions_app:health", "ok", 30)
            answer = await cache.aget("sessions_app:health")
    except TimeoutError:
        return {"status": "unavailable", "reason": "timeout"}
    except Exception as exc:  # any cache backend's error: reported, not raised
        logger.warning("health: cache %r failed: %s: %s", alias, type(exc).__name__, exc)
        return {"status": "unavailable", "reason": "error"}
    return {"status": "ok"} if answer == "ok" else {"status": "unavailable", "reason": "lost a write"}


@never_cache
@require_safe
async def health(request: HttpRequest) -> JsonResponse:
    timeout = float(app_settings.HEALTH_TIMEOUT)
    aliases = _cache_aliases()
    database, *cache_results = await asyncio.gather(
        _check_database(timeout), *(_check_cache(alias, timeout) for alias in aliases)
    )
    checks: dict[str, dict[str, str]] = {"database": database}
    for alias, result in zip(aliases, cache_results, strict=True):
        checks[f"cache:{alias}"] = result
    healthy = database["status"] == "ok"
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks}, status=200 if healthy else 503
    )
