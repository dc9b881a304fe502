"""Token authentication that remembers who a token belongs to, briefly.

Opt in with ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``; the rules
for how long an answer may be reused are in ``auth_cache``.
"""

from __future__ import annotations

import copy
from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.request import Request

from . import auth_cache


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's ``TokenAuthentication`` with the token's user kept in Django's cache.

    A deleted token, or a user made inactive, is refused from the next
    request on when the change goes through Django (see ``auth_cache``).
    Unknown tokens are never cached: each is looked up, and throttled.
    """

    def authenticate(self, request: Request) -> tuple[Any, Any] | None:
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
