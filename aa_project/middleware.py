"""The host project's middleware under ASGI without avoidable thread hops.

Under ASGI, Django's ``MiddlewareMixin`` calls each middleware's
``process_request`` and ``process_response`` (and its ``process_view``)
through ``sync_to_async``: a hop to the request's thread and back, for each,
on every request. Most of the stock middleware only compute on the request
and the response (headers, a redirect, a cookie, a lazy object), so
:func:`in_loop` builds a subclass that calls those hooks directly in the
event loop, and hops to a thread only for the part that can block:

- ``SecurityMiddleware``, ``CommonMiddleware``, ``XFrameOptionsMiddleware``,
  ``AuthenticationMiddleware`` (``request.user`` stays lazy: the view that
  reads it pays the query, in its own thread or with ``await
  request.auser()``), ``CsrfViewMiddleware`` (its secret in a cookie, the
  default failure view; with ``CSRF_USE_SESSIONS`` or another
  ``CSRF_FAILURE_VIEW`` it keeps Django's threads): all in the loop.
- ``SessionMiddleware``: the lazy session is made in the loop; its
  ``process_response`` goes to a thread when the session will be saved
  (modified, or ``SESSION_SAVE_EVERY_REQUEST``), in the loop otherwise
  (headers only).
- ``MessageMiddleware``: the lazy storage is made in the loop; its
  ``process_response`` goes to a thread when messages were read or added
  (the storage may read or write the session), in the loop otherwise
  (nothing to do).

Under WSGI (and Django's sync test client) each class is Django's own.
Django's deploy checks find SecurityMiddleware, CsrfViewMiddleware and
XFrameOptionsMiddleware by their dotted paths: settings.py silences the
three "not in MIDDLEWARE" warnings that the adapters' paths raise, and
:func:`check_deploy_with_the_adapters` runs Django's security checks again
with each adapter read as the class it adapts (its subclass), reporting what
they find, a missing middleware as ``aa_project.W001``-``W003``.
``tests/test_middleware.py`` runs requests through Django's ASGI handler
with the ORM guarded in the loop, and compares the answers with Django's own
middleware's.

:class:`StaticFilesMiddleware` is ServeStatic's async middleware (the
admin's and the API docs' static files), usable under WSGI too: there it
looks the path up in ServeStatic's table and passes every other request on
without an event loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.middleware import AuthenticationMiddleware as DjangoAuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core import checks
from django.http import HttpRequest, HttpResponseBase
from django.middleware.clickjacking import XFrameOptionsMiddleware as DjangoXFrameOptionsMiddleware
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.middleware.csrf import CsrfViewMiddleware as DjangoCsrfViewMiddleware
from django.middleware.security import SecurityMiddleware as DjangoSecurityMiddleware
from django.utils.deprecation import MiddlewareMixin
from servestatic.middleware import (  # type: ignore[import-untyped]
    AsyncServeStaticFileResponse,
    ServeStaticMiddleware,
)

Blocks = Callable[[HttpRequest, HttpResponseBase], bool]

# Each adapter's dotted path: the dotted path of the class it adapts.
ADAPTED: dict[str, str] = {}


class _InLoop(MiddlewareMixin):
    """What :func:`in_loop` puts in front of the wrapped class in the MRO."""

    # Set on each class in_loop builds.
    response_blocks: Blocks | None = None
    loop_allowed: Callable[[], bool] | None = None
    # Django's hooks, unchanged: what they do to an API answer, sessions_app.asgi.SessionsEdge
    # does too (it runs the header middleware's process_response to learn their headers).
    edge_transparent = True

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        allowed = type(self).loop_allowed
        self.in_loop = self.async_mode and (allowed is None or allowed())
        view_hook = getattr(self, "process_view", None)
        if self.in_loop and view_hook is not None:
            # Django adapts a synchronous process_view with sync_to_async;
            # an async one it awaits in the loop.
            async def process_view(request: HttpRequest, *args: Any) -> HttpResponseBase | None:
                return view_hook(request, *args)  # type: ignore[no-any-return]

            self.process_view = process_view

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        if not self.in_loop:
            return await super().__acall__(request)
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await cast(Awaitable[HttpResponseBase], self.get_response(request))
        if hasattr(self, "process_response"):
            blocks = type(self).response_blocks
            if blocks is not None and blocks(request, response):
                response = await sync_to_async(self.process_response, thread_sensitive=True)(
                    request, response
                )
            else:
                response = self.process_response(request, response)
        return response


def in_loop(
    middleware: type[MiddlewareMixin],
    *,
    response_blocks: Blocks | None = None,
    loop_allowed: Callable[[], bool] | None = None,
) -> type[MiddlewareMixin]:
    """A subclass of ``middleware`` whose hooks run in the event loop under ASGI.

    ``response_blocks(request, response)``: true when this request's
    ``process_response`` can block (a query, a cache call); it then runs in
    the request's thread, as Django would run it. ``loop_allowed()``, asked
    once when the middleware is loaded: false keeps every hook in a thread
    (a setting made the middleware touch the database).
    """
    ADAPTED[f"{__name__}.{middleware.__name__}"] = f"{middleware.__module__}.{middleware.__name__}"
    return type(
        middleware.__name__,
        (_InLoop, middleware),
        {
            "__module__": __name__,
            "__qualname__": middleware.__name__,
            "__doc__": f"{middleware.__module__}.{middleware.__name__}, its hooks in the loop under ASGI.",
            "response_blocks": staticmethod(response_blocks) if response_blocks else None,
            "loop_allowed": staticmethod(loop_allowed) if loop_allowed else None,
        },
    )


def _session_saves(request: HttpRequest, response: HttpResponseBase) -> bool:
    session = getattr(request, "session", None)
    return session is not None and bool(
        getattr(session, "modified", True) or settings.SESSION_SAVE_EVERY_REQUEST
    )


def _messages_stored(request: HttpRequest, response: HttpResponseBase) -> bool:
    storage = getattr(request, "_messages", None)
    return storage is not None and bool(getattr(storage, "used", True) or getattr(storage, "added_new", True))


def _csrf_without_database() -> bool:
    return not settings.CSRF_USE_SESSIONS and settings.CSRF_FAILURE_VIEW == "django.views.csrf.csrf_failure"


SecurityMiddleware = in_loop(DjangoSecurityMiddleware)
SessionMiddleware = in_loop(DjangoSessionMiddleware, response_blocks=_session_saves)
CommonMiddleware = in_loop(DjangoCommonMiddleware)
CsrfViewMiddleware = in_loop(DjangoCsrfViewMiddleware, loop_allowed=_csrf_without_database)
AuthenticationMiddleware = in_loop(DjangoAuthenticationMiddleware)
MessageMiddleware = in_loop(DjangoMessageMiddleware, response_blocks=_messages_stored)
XFrameOptionsMiddleware = in_loop(DjangoXFrameOptionsMiddleware)


# The warnings Django raises when its middleware's dotted path is not in
# MIDDLEWARE (settings.py silences them; the check below raises its own).
PATH_WARNINGS = ("security.W001", "security.W002", "security.W003")


def _django_security_checks(app_configs: Any, databases: Any) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for check in checks.registry.registry.get_checks(include_deployment_checks=True):
        if check.__module__.startswith("django.core.checks.security."):
            found += check(app_configs=app_configs, databases=databases)
    return found


@checks.register(checks.Tags.security, deploy=True)
def check_deploy_with_the_adapters(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Django's security checks, each adapter in MIDDLEWARE read as the class it adapts."""
    from django.test import override_settings

    mapped = [ADAPTED.get(path, path) for path in settings.MIDDLEWARE]
    if mapped == list(settings.MIDDLEWARE):
        return []
    as_listed = _django_security_checks(app_configs, databases)
    with override_settings(MIDDLEWARE=mapped):
        as_adapted = _django_security_checks(app_configs, databases)
    found: list[checks.CheckMessage] = []
    for message in as_adapted:
        if message.id in PATH_WARNINGS:
            message = checks.Warning(
                message.msg,
                hint=message.hint,
                obj=message.obj,
                id=message.id.replace("security.", "aa_project."),
            )
        elif message in as_listed:
            continue
        found.append(message)
    return found


class StaticFilesMiddleware:
    """ServeStatic's middleware under ASGI; under WSGI, its files served without an event loop per request."""

    sync_capable = True
    async_capable = True
    # sessions_app.asgi.SessionsEdge may answer the API ahead of it: it only serves STATIC_URL.
    edge_transparent = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            self.servestatic = ServeStaticMiddleware(get_response)
            markcoroutinefunction(self)
        else:

            async def unused(request: HttpRequest) -> HttpResponseBase:
                raise AssertionError("the sync path calls get_response itself")

            self.servestatic = ServeStaticMiddleware(unused)

    def may_be_static(self, path: str) -> bool:
        return path.startswith(self.servestatic.static_prefix) or bool(
            getattr(settings, "SERVESTATIC_ROOT", None)
        )

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        servestatic = self.servestatic
        if servestatic.autorefresh and not self.may_be_static(request.path_info):
            # In DEBUG ServeStatic looks every path up on disk, in a thread
            # under ASGI: only paths under STATIC_URL can be its.
            return self.get_response(request)  # type: ignore[no-any-return]
        if self.async_mode:
            return cast(Awaitable[HttpResponseBase], servestatic(request))
        if servestatic.autorefresh:
            static_file = servestatic.find_file(request.path_info)
        else:
            static_file = servestatic.files.get(request.path_info)
        if static_file is None:
            return cast(HttpResponseBase, self.get_response(request))
        served = static_file.get_response(request.method or "GET", request.META)
        response: HttpResponseBase = AsyncServeStaticFileResponse(
            served.file or (), status=int(served.status)
        )
        del response["content-type"]
        for key, value in served.headers:
            if value is not None:
                response[key] = value
        return response
