"""A short-lived memory of the API's authentication and permission answers.

Why: DRF asks the database who the caller is (token or agent key lookup)
and what they may do (``user.has_perms``: the user's and their groups'
permissions) on every request. Those queries cost several times the
session lookup itself. The runtime calls the API with the same few
credentials over and over, so their answers are kept.

Where: each process keeps the answers it looked up in its own memory
(``_answers``), never in Django's cache. The cache holds one value only,
the *generation*: a random tag, no secret. So nothing a cache reader could
use is ever written there: no token, no key secret, no password hash, no
pickled user (tested by reading every value the cache holds).

Correctness: every answer is tagged with the generation read before the
database is asked, and served only while the cache still holds that
generation and its deadline (``SESSIONS_APP["AUTH_CACHE_TIMEOUT"]``) has
not passed. A change to a user, group, permission, token or agent key
saved through Django (the admin, the ORM, a proxy model, a custom token
model, any database alias) sets a new generation once its transaction
commits, so every answer made before it is refused from the next request
on, in every process that shares the cache (Redis: immediately; a
per-process ``LocMemCache``: only in the process that made the change,
elsewhere within the timeout). Changes Django does not signal
(``QuerySet.update()``, raw SQL) take effect within the timeout. ``0``
turns the memory off.

If the cache fails, the answer comes from the database (the outage logged
once, ``sessions_app.caching``). A change made while the cache is down
cannot retire the answers other processes keep: they go on at most
``AUTH_CACHE_TIMEOUT`` (logged at ERROR).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import BaseCache
from django.db import router, transaction

from ..caching import answered, cache_for, failed
from ..conf import app_settings

logger = logging.getLogger("sessions_app.api")

T = TypeVar("T")

GENERATION_KEY = "sessions_app:auth:generation"

# (kind, parts) -> (generation, deadline, answer): the answers this process
# looked up. Keyed by the parts themselves (no hash on a hit); they never
# leave the process.
_answers: dict[tuple[str, tuple[object, ...]], tuple[str, float, Any]] = {}
# A bound on _answers: past it, expired entries go, and all of them if none had expired.
ANSWERS_LIMIT = 10_000


def cached(kind: str, parts: tuple[object, ...], compute: Callable[[], T]) -> T:
    """``compute()``, or the answer this process kept if no auth change happened since.

    ``compute`` raising (an unknown token, say) keeps nothing: each such
    call asks the database again.
    """
    timeout = app_settings.AUTH_CACHE_TIMEOUT
    if not timeout:
        return compute()
    try:
        cache = cache_for(app_settings.AUTH_CACHE_ALIAS)
        generation = cache.get(GENERATION_KEY)
        if generation is None:
            # First use, or the cache lost the key: a generation no kept
            # answer can carry (add: another process may have set one).
            cache.add(GENERATION_KEY, secrets.token_hex(8), None)
            generation = cache.get(GENERATION_KEY)
    except Exception as exc:
        failed(app_settings.AUTH_CACHE_ALIAS, exc)  # logged once an outage: the database answers
        return compute()
    answered(app_settings.AUTH_CACHE_ALIAS)
    name = (kind, parts)
    entry = _answers.get(name)
    if entry is not None and entry[0] == generation and time.time() < entry[1]:
        return entry[2]  # type: ignore[no-any-return]
    # The generation was read before the database is asked: an answer that
    # races a change is kept under the old generation, which the change
    # then retires.
    value = compute()
    if isinstance(generation, str):
        _remember(name, (generation, time.time() + timeout, value))
    return value


def current_generation(cache: BaseCache | None = None) -> object:
    """The generation the cache holds now (``None``: unset, the cache down, or the memory off).

    Read once per request by ``sessions_app.asgi``, for every ``kept`` answer
    it asks; it passes ``cache_for(AUTH_CACHE_ALIAS)``, which it holds while
    the settings stay as they are (and the memory on).
    """
    if cache is None:
        if not app_settings.AUTH_CACHE_TIMEOUT:
            return None
        cache = cache_for(app_settings.AUTH_CACHE_ALIAS)
    try:
        return cache.get(GENERATION_KEY)
    except Exception:
        return None  # the cache is down: cached() notes the outage when Django asks


def kept(kind: str, parts: tuple[object, ...], generation: object) -> Any:
    """The answer ``cached`` would give without computing, or ``None`` when it would have to compute.

    ``generation`` is ``current_generation()``. No database, no side effect:
    ``sessions_app.asgi`` hands the request to Django (which computes and
    keeps the answer) on ``None``.
    """
    entry = _answers.get((kind, parts))
    if entry is None or generation is None or entry[0] != generation or time.time() >= entry[1]:
        return None
    return entry[2]


def _remember(name: tuple[str, tuple[object, ...]], entry: tuple[str, float, Any]) -> None:
    if len(_answers) >= ANSWERS_LIMIT and name not in _answers:
        now = time.time()
        for stale in [stored for stored, kept in list(_answers.items()) if kept[1] <= now]:
            _answers.pop(stale, None)
        if len(_answers) >= ANSWERS_LIMIT:
            _answers.clear()
    _answers[name] = entry


def new_generation() -> None:
    """Retire every kept answer: this process's at once, every other's that shares the cache."""
    _answers.clear()  # even if the cache then fails to take the new generation
    try:
        cache_for(app_settings.AUTH_CACHE_ALIAS).set(GENERATION_KEY, secrets.token_hex(8), None)
    except Exception as exc:
        failed(app_settings.AUTH_CACHE_ALIAS, exc)
        logger.error("session API: could not retire kept auth answers (cache down): %s", exc)


# Concrete models whose rows change an authentication or permission answer,
# and the m2m tables between them; filled by connect_signals().
_watched_models: set[type] = set()
_watched_relations: set[type] = set()


def on_auth_change(sender: type, **kwargs: Any) -> None:
    """Signal receiver: a new generation once the change's transaction commits.

    Any sender whose concrete model is watched counts: a proxy model (a
    proxy User admin, DRF's ``TokenProxy``) saves rows of its concrete
    model. Not before the commit: a request between the signal and the
    commit would read the old rows and keep them under the new generation.
    The commit awaited is the one on the signal's own database alias.
    """
    if "action" in kwargs:  # m2m_changed
        if sender not in _watched_relations or kwargs["action"].startswith("pre_"):
            return
    elif getattr(getattr(sender, "_meta", None), "concrete_model", None) not in _watched_models:
        return
    if kwargs.get("raw"):  # loaddata
        return
    if kwargs.get("update_fields") == frozenset({"last_login"}):
        # Every login saves the user with just this field; it changes no answer.
        return
    transaction.on_commit(new_generation, using=kwargs.get("using") or router.db_for_write(sender))


def watched_models() -> list[type]:
    """The user model, ``Group``, ``Permission``, the API's token models and the agent key model."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group, Permission
    from rest_framework.authentication import TokenAuthentication
    from rest_framework.settings import api_settings

    from ..models import AgentKey

    models: list[type] = [get_user_model(), Group, Permission, AgentKey]
    try:
        from rest_framework.authtoken.models import Token
    except (ImportError, RuntimeError):  # authtoken not installed
        pass
    else:
        models.append(Token)
    for authentication in api_settings.DEFAULT_AUTHENTICATION_CLASSES:
        # A TokenAuthentication subclass names its (possibly custom) token model.
        if isinstance(authentication, type) and issubclass(authentication, TokenAuthentication):
            with contextlib.suppress(ImportError, RuntimeError):  # DRF's Token, authtoken not installed
                models.append(authentication().get_model())
    return [model._meta.concrete_model for model in models]  # type: ignore[attr-defined]


def connect_signals() -> None:
    """Watch every model whose rows change an authentication or permission answer.

    Connected for the watched models and every proxy of them (a save through
    a proxy model sends the proxy as sender), as loaded when the app is
    ready; ``on_auth_change`` checks the concrete model again.
    """
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group
    from django.db.models.signals import m2m_changed, post_delete, post_save

    user_model = get_user_model()
    models = watched_models()
    relations = [
        relation.through
        for relation in (
            getattr(user_model, "groups", None),
            getattr(user_model, "user_permissions", None),
            Group.permissions,
        )
        if relation is not None and hasattr(relation, "through")
    ]
    _watched_models.clear()
    _watched_models.update(models)
    _watched_relations.clear()
    _watched_relations.update(relations)
    # Per sender, each watched model and every proxy of it: a receiver for
    # every model would make Django think every model has delete listeners
    # (no more fast deletes anywhere in the project).
    for model in apps.get_models(include_auto_created=True):
        uid = f"sessions_app-auth-{model._meta.label}"
        if model._meta.concrete_model in _watched_models:
            post_save.connect(on_auth_change, sender=model, dispatch_uid=uid + "-save")
            post_delete.connect(on_auth_change, sender=model, dispatch_uid=uid + "-delete")
        elif model in _watched_relations:
            m2m_changed.connect(on_auth_change, sender=model, dispatch_uid=uid + "-m2m")
