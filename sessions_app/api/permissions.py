"""Who may do what: Django's model permissions, reads included."""

from rest_framework.permissions import DjangoModelPermissions

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
