"""Who may do what: Django's model permissions for users, scopes for agent keys."""

from typing import Any

from rest_framework.permissions import DjangoModelPermissions
from rest_framework.request import Request

from . import auth_cache
from .authentication import AgentGrant

#: The scope an agent key needs for each method (the bulk actions count as their single calls).
SCOPE_FOR_METHOD = {
    "GET": "read",
    "HEAD": "read",
    "OPTIONS": "read",
    "POST": "write",
    "PUT": "write",
    "PATCH": "write",
    "DELETE": "delete",
}

_VIEW = "%(app_label)s.view_%(model_name)s"
_ADD = "%(app_label)s.add_%(model_name)s"
_CHANGE = "%(app_label)s.change_%(model_name)s"
_DELETE = "%(app_label)s.delete_%(model_name)s"


class ExecutionSessionPermissions(DjangoModelPermissions):
    """``view`` to read, ``add`` to create, ``change`` to modify, ``delete`` to delete.

    DRF's ``DjangoModelPermissions`` lets any authenticated user read; here
    reading needs the ``view`` permission too. ``PUT`` may create or replace,
    so it needs both ``add`` and ``change``. Anonymous requests are refused
    (401 with token authentication's challenge).

    The answer of ``user.has_perms()`` is cached per user and method for
    ``SESSIONS_APP["AUTH_CACHE_TIMEOUT"]`` seconds; a change to the user's,
    their groups' or the permissions' rows made through Django retires it at
    once (``auth_cache``).
    """

    perms_map = {
        "GET": [_VIEW],
        "OPTIONS": [_VIEW],
        "HEAD": [_VIEW],
        "POST": [_ADD],
        "PUT": [_ADD, _CHANGE],
        "PATCH": [_CHANGE],
        "DELETE": [_DELETE],
    }

    # The bulk endpoints are POSTs that each do what one single call does
    # for many records, so they need that call's permissions.
    action_methods = {"bulk_save": "PUT", "bulk_load": "GET", "bulk_delete": "DELETE"}

    def has_permission(self, request: Request, view: Any) -> bool:
        self._method = self.action_methods.get(getattr(view, "action", None) or "", request.method)
        grant = request.auth
        if isinstance(grant, AgentGrant):
            scope = SCOPE_FOR_METHOD.get(self._method or "")
            return bool(getattr(view, "agent_scoped", False)) and scope in grant.scopes
        user = request.user
        if not user or not user.is_authenticated or user.pk is None:
            return super().has_permission(request, view)
        # The model from the view's queryset attribute where it has one:
        # DRF's _queryset() would build (and clone) the queryset just for it.
        queryset = getattr(view, "queryset", None)
        model = queryset.model if queryset is not None else self._queryset(view).model
        ask_django = super().has_permission
        answer_for = self.answer_key(type(self), user, self._method, model)
        return auth_cache.cached("perms", answer_for, lambda: ask_django(request, view))

    @staticmethod
    def answer_key(cls: type[Any], user: Any, method: str | None, model: Any) -> tuple[object, ...]:
        """Under which name the auth cache keeps the answer for ``user``, ``method`` and ``model``."""
        return (cls.__qualname__, user._meta.label, user.pk, method, model._meta.label)

    def get_required_permissions(self, method: str, model_cls: Any) -> list[str]:
        perms: list[str] = super().get_required_permissions(getattr(self, "_method", method), model_cls)
        return perms
