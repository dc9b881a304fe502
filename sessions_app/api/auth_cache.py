"""A short-lived cache of the API's authentication and permission answers.

Why: DRF asks the database who the caller is (token lookup) and what they
may do (``user.has_perms``: the user's and their groups' permissions) on
every request. Those three queries cost several times the session lookup
itself, so without a cache the API answers a GET at well under half the
rate of a bare async view. The runtime calls the API with the same few
tokens over and over, so their answers are cached.

Correctness: every entry is tagged with a *generation*, read from the same
cache before the database is asked. A change to a user, group, permission
or token saved through Django (the admin, the ORM, ``changepassword``...)
sets a new generation once its transaction commits, so every entry made
before the change is ignored from then on, in every process that shares
the cache. Changes Django does not signal (``QuerySet.update()``, raw SQL,
an external authentication backend) and, with a per-process cache such as
``LocMemCache``, changes made in another process take effect within
``SESSIONS_APP["AUTH_CACHE_TIMEOUT"]`` seconds. ``0`` turns the cache off.

If the cache fails, the answer comes from the database, with a warning.

Speed: each entry carries its deadline (wall-clock, as the cache's own
expiry), and each process keeps the answers it has read or stored, decoded
(``_decoded``). A request then reads only the generation from the cache
(a few bytes) and takes the answer from memory while the generation is
the same and the deadline not passed: unpickling a user and its token on
every request cost about a fifth of what the API adds to a bare view. The
answers in memory are shared by the requests of the process: treat them
as read-only (``CachedTokenAuthentication`` hands each request its own
copy of the user).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeGuard, TypeVar

from django.db import router, transaction

from ..conf import app_settings
from .caching import cache_for

logger = logging.getLogger("sessions_app.api")

T = TypeVar("T")

GENERATION_KEY = "sessions_app:auth:generation"
_PREFIX = "sessions_app:auth:"

# (kind, parts) -> (generation, deadline, answer): the entries this process
# has read or stored. Keyed by the parts themselves, not their digest: on a
# hit no hash is computed, and nothing of it leaves the process.
_decoded: dict[tuple[str, tuple[object, ...]], tuple[Any, float, Any]] = {}
# A bound on _decoded: past it, expired entries go, and all of them if none had expired.
DECODED_LIMIT = 10_000


def cache_key(kind: str, *parts: object) -> str:
    """A fixed-length key that does not reveal its parts (a token is a secret)."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
    return f"{_PREFIX}{kind}:{digest}"


def cached(kind: str, parts: tuple[object, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or its answer from the cache if no auth change happened since it was stored."""
    timeout = app_settings.AUTH_CACHE_TIMEOUT
    if not timeout:
        return compute()
    name = (kind, parts)
    try:
        cache = cache_for(app_settings.AUTH_CACHE_ALIAS)
        if name in _decoded:
            # Only the generation from the cache; the answer is in memory.
            generation = cache.get(GENERATION_KEY)
            entry = _decoded.get(name)
            if _valid(entry, generation):
                return entry[2]  # type: ignore[no-any-return]
            key = cache_key(kind, *parts)
            entry = cache.get(key)
        else:
            key = cache_key(kind, *parts)
            found = cache.get_many([GENERATION_KEY, key])
            generation, entry = found.get(GENERATION_KEY), found.get(key)
    except Exception as exc:
        logger.warning("session API: auth cache unavailable, asking the database: %s", exc)
        return compute()
    if _valid(entry, generation):
        _remember(name, entry)
        return entry[2]  # type: ignore[no-any-return]
    if generation is None:
        # First use, or the cache lost the key: start a generation no old
        # entry can carry.
        generation = secrets.token_hex(8)
        try:
            if not cache.add(GENERATION_KEY, generation, None):
                generation = cache.get(GENERATION_KEY)
        except Exception as exc:
            logger.warning("session API: auth cache unavailable, asking the database: %s", exc)
            return compute()
    # The generation was read before the database is asked: an answer that
    # races a change is stored under the old generation, which the change
    # then retires.
    value = compute()
    if generation is not None:
        entry = (generation, time.time() + timeout, value)
        try:
            cache.set(key, entry, timeout)
        except Exception as exc:
            logger.warning("session API: auth cache unavailable, not storing: %s", exc)
        else:
            _remember(name, entry)
    return value


def _valid(entry: object, generation: object) -> TypeGuard[tuple[Any, float, Any]]:
    """Whether ``entry`` is a ``(generation, deadline, answer)`` of this generation, not yet expired.

    Anything else (another shape, as an older release stored) is a miss.
    """
    return (
        generation is not None
        and isinstance(entry, tuple)
        and len(entry) == 3
        and entry[0] == generation
        and time.time() < entry[1]
    )


def _remember(name: tuple[str, tuple[object, ...]], entry: tuple[Any, float, Any]) -> None:
    if _decoded.get(name) is entry:
        return
    if len(_decoded) >= DECODED_LIMIT:
        now = time.time()
        for stale in [stored for stored, kept in list(_decoded.items()) if kept[1] <= now]:
            _decoded.pop(stale, None)
        if len(_decoded) >= DECODED_LIMIT:
            _decoded.clear()
    _decoded[name] = entry


def new_generation() -> None:
    """Retire every cached answer (in every process that shares the cache)."""
    try:
        cache_for(app_settings.AUTH_CACHE_ALIAS).set(GENERATION_KEY, secrets.token_hex(8), None)
    except Exception as exc:
        logger.warning("session API: could not retire cached auth answers: %s", exc)


def on_auth_change(sender: type, **kwargs: Any) -> None:
    """Signal receiver: a new generation once the change's transaction commits.

    Not before: a request between the signal and the commit would read the
    old rows and cache them under the new generation.
    """
    if kwargs.get("raw"):  # loaddata
        return
    if kwargs.get("update_fields") == frozenset({"last_login"}):
        # Every login saves the user with just this field; it changes no answer.
        return
    if kwargs.get("action", "post_").startswith("pre_"):  # m2m_changed fires before and after
        return
    transaction.on_commit(new_generation, using=router.db_for_write(sender))


def connect_signals() -> None:
    """Watch every model whose rows change an authentication or permission answer."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from django.db.models.signals import m2m_changed, post_delete, post_save

    user_model = get_user_model()
    models: list[type] = [user_model, Group, Permission]
    try:
        from rest_framework.authtoken.models import Token
    except (ImportError, RuntimeError):  # authtoken not installed
        pass
    else:
        models.append(Token)
    for model in models:
        label = model._meta.label  # type: ignore[attr-defined]
        post_save.connect(on_auth_change, sender=model, dispatch_uid=f"sessions_app-auth-save-{label}")
        post_delete.connect(on_auth_change, sender=model, dispatch_uid=f"sessions_app-auth-delete-{label}")
    for relation in (
        getattr(user_model, "groups", None),
        getattr(user_model, "user_permissions", None),
        Group.permissions,
    ):
        if relation is not None and hasattr(relation, "through"):
            m2m_changed.connect(
                on_auth_change,
                sender=relation.through,
                dispatch_uid=f"sessions_app-auth-m2m-{relation.through._meta.label}",
            )
