"""Token authentication that remembers who a token belongs to, briefly.

Opt in with ``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``; the rules
for how long an answer may be reused are in ``auth_cache``.
"""

from __future__ import annotations

from typing import Any

from rest_framework.authentication import TokenAuthentication

from . import auth_cache


class CachedTokenAuthentication(TokenAuthentication):
    """DRF's ``TokenAuthentication`` with the token's user kept in Django's cache.

    A deleted token, or a user made inactive, is refused from the next
    request on when the change goes through Django (see ``auth_cache``).
    Unknown tokens are never cached: each is looked up, and throttled.
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Any]:
        look_up = super().authenticate_credentials
        return auth_cache.cached("token", (key,), lambda: look_up(key))
