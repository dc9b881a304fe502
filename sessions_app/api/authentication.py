"""The API's two credentials: users' DRF tokens and agents' keys, each answer kept briefly.

- ``CachedTokenAuthentication``: ``Authorization: Token <key>``, DRF's token
  of a user (an operator): the user's model permissions apply.
- ``AgentKeyAuthentication``: ``Authorization: Api-Key <prefix>.<secret>``,
  an ``AgentKey``: the request acts for the key's agents only
  (``request.auth`` is its ``AgentGrant``), within its scopes.

Opt in with ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``; the rules
for how long an answer may be reused are in ``auth_cache``.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from typing import Any

from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication, TokenAuthentication, get_authorization_header
from rest_framework.request import Request

from ..models import AgentKey
from . import auth_cache
from .throttling import CountsFailures

logger = logging.getLogger("sessions_app.api")

LAST_USED_EVERY = 60.0
"""Seconds between two writes of an agent key's ``last_used`` by one process."""


class CachedTokenAuthentication(CountsFailures, TokenAuthentication):
    """DRF's ``TokenAuthentication`` with the token's user kept in Django's cache.

    A deleted token, or a user made inactive, is refused from the next
    request on when the change goes through Django (see ``auth_cache``).
    Unknown tokens are never cached: each is looked up, and counted against
    the client's address (``throttling``): past ``AUTH_FAILURE_RATE`` the
    address gets 429 before any lookup.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
        words = get_authorization_header(request).split()  # as DRF's TokenAuthentication reads it
        if not words or words[0].lower() != self.keyword.lower().encode():
            return None  # not a token: another class's credential, or none
        self.refuse_if_blocked(request)
        try:
            return self.authenticate_token(request)
        except exceptions.AuthenticationFailed:
            self.count_failure(request)
            raise

    def authenticate_token(self, request: Request) -> tuple[Any, Any] | None:
        """DRF's ``authenticate``, reading the common header without ``request.headers``.

        DRF reads the header through ``request.headers``, which parses
        every header of the request on first use. ``Token <key>`` with one
        space and an ASCII key is read straight from ``META``; any other
        header goes to DRF, with its messages.
        """
        header = request.META.get("HTTP_AUTHORIZATION")
        if isinstance(header, str):
            keyword, space, key = header.partition(" ")
            if (
                space
                and keyword.lower() == self.keyword.lower()
                and key
                and key.isascii()
                and key.isprintable()
                and " " not in key
            ):
                return self.authenticate_credentials(key)
        answer: tuple[Any, Any] | None = super().authenticate(request)
        return answer

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        if "\x00" in key:
            # No token holds NUL, and PostgreSQL refuses to compare a text
            # with one (a database error, which the API answered 503):
            # refused as DRF refuses an unknown key.
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        look_up = super().authenticate_credentials
        user, token = auth_cache.cached("token", (key,), lambda: look_up(key))
        # The cached pair is shared by every request with this token; each
        # request gets a user object of its own, as DRF's lookup would give:
        # Django's permission checks keep their answers on it.
        return copy.copy(user), token


@dataclass(frozen=True)
class AgentGrant:
    """What an agent key may do: ``request.auth`` of a request made with one. Holds no secret."""

    key_id: str
    prefix: str
    name: str
    agent_ids: tuple[int, ...]
    scopes: frozenset[str]
    expires_at: float | None  # a Unix time, or None: never

    @classmethod
    def of(cls, key: AgentKey) -> AgentGrant:
        expiry = key.expiry_date
        return cls(
            key_id=str(key.pk),
            prefix=key.prefix,
            name=key.name,
            agent_ids=key.agents(),
            scopes=key.scope_set(),
            expires_at=None if expiry is None else expiry.timestamp(),
        )


class AgentKeyUser:
    """``request.user`` of a request made with an agent key: authenticated, and no model permission.

    Not a ``User``: Django's permission checks answer no, so an agent key
    opens nothing that needs a permission (``/api/metrics/``, and the admin,
    which does not read API credentials at all). ``pk`` names the key for
    DRF's per-user throttles and the write log.
    """

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    def __init__(self, grant: AgentGrant) -> None:
        self.grant = grant
        self.pk = self.id = f"agent-key:{grant.prefix}"

    def __str__(self) -> str:
        return self.get_username()

    def get_username(self) -> str:
        return f"agent key {self.grant.prefix} ({self.grant.name})"

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list: object, obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False


class AgentKeyAuthentication(CountsFailures, BaseAuthentication):
    """``Authorization: Api-Key <prefix>.<secret>``: an ``AgentKey``, not revoked, not expired.

    The key is looked up by djangorestframework-api-key's manager (by its
    public prefix, then its SHA-512 hash compared in constant time); the
    answer, an ``AgentGrant``, is kept as tokens' answers are
    (``auth_cache``), with the expiry checked on every request. Unknown,
    revoked and malformed keys are "Invalid API key." (401), an expired one
    "API key has expired." (401); none of them is kept, and each counts
    against the client's address (``throttling``).
    """

    keyword = "Api-Key"

    def authenticate(self, request: Request) -> tuple[AgentKeyUser, AgentGrant] | None:
        header = request.META.get("HTTP_AUTHORIZATION")
        if not isinstance(header, str):
            return None
        keyword, space, key = header.partition(" ")
        if keyword.lower() != self.keyword.lower():
            return None
        self.refuse_if_blocked(request)
        try:
            return self.authenticate_key(space, key)
        except exceptions.AuthenticationFailed:
            self.count_failure(request)
            raise

    def authenticate_key(self, space: str, key: str) -> tuple[AgentKeyUser, AgentGrant]:
        if not space or not key:
            raise exceptions.AuthenticationFailed(_("Invalid API key header. No credentials provided."))
        prefix, dot, secret = key.partition(".")
        if not (dot and prefix.isalnum() and prefix.isascii() and len(prefix) <= 8 and secret.isascii()):
            raise exceptions.AuthenticationFailed(_("Invalid API key."))
        if not secret.isprintable() or " " in secret:
            raise exceptions.AuthenticationFailed(_("Invalid API key."))
        grant = auth_cache.cached("agent-key", (key,), lambda: self.look_up(key))
        if grant.expires_at is not None and grant.expires_at <= time.time():
            raise exceptions.AuthenticationFailed(_("API key has expired."))
        self.note_use(grant)
        return AgentKeyUser(grant), grant

    def authenticate_header(self, request: Request) -> str:
        return self.keyword

    def look_up(self, key: str) -> AgentGrant:
        try:
            found = AgentKey.objects.get_from_key(key)  # not revoked, and the hash matches
        except AgentKey.DoesNotExist:
            raise exceptions.AuthenticationFailed(_("Invalid API key.")) from None
        assert isinstance(found, AgentKey)
        try:
            return AgentGrant.of(found)
        except ValueError as exc:  # a row saved around the model's checks (raw SQL, say)
            logger.error("agent key %s is not usable: %s", found.prefix, exc)
            raise exceptions.AuthenticationFailed(_("Invalid API key.")) from None

    def note_use(self, grant: AgentGrant) -> None:
        """Write ``last_used``, at most once every ``LAST_USED_EVERY`` seconds per key and process.

        ``QuerySet.update()`` sends no signal, so it retires no kept answer.
        """
        if use_is_noted(grant):
            return
        AgentKey.objects.filter(pk=grant.key_id).update(last_used=timezone.now())
        _last_noted[grant.key_id] = time.monotonic()


_last_noted: dict[str, float] = {}


def use_is_noted(grant: AgentGrant) -> bool:
    """Whether this process wrote the key's ``last_used`` less than ``LAST_USED_EVERY`` seconds ago."""
    last = _last_noted.get(grant.key_id)
    return last is not None and time.monotonic() - last < LAST_USED_EVERY
