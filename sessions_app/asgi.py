"""``SessionsEdge``: the API's hot calls answered ahead of Django's handler, under ASGI.

One line in a project's ``asgi.py``::

    from django.core.asgi import get_asgi_application
    from sessions_app.asgi import SessionsEdge

    application = SessionsEdge(get_asgi_application())

Why: under ASGI every request Django serves passes its handler, the
middleware chain and DRF's view machinery, several times the cost of the
database call an agent's ``GET`` needs (``docs/performance.md``). The calls
agents make all day are few and fixed, so this layer answers them itself:

- ``GET``, ``PUT`` and ``DELETE`` of ``sessions/{id}/``, and ``POST`` of
  ``sessions/bulk-save/``, ``bulk-load/`` and ``bulk-delete/``,
- with ``Authorization: Token ...`` or ``Api-Key ...`` whose answer this
  process already keeps (``api.auth_cache``), a JSON body, and an
  ``Accept`` of nothing, ``*/*`` or ``application/json``,

through the same code the viewset runs: the same authentication answers,
the same permission answers and agent scopes, the throttles (the same
classes, the same counts), the store's native async path, the same write
log, metrics and JSON, and the headers Django's middleware would add
(``SecurityMiddleware``'s and ``XFrameOptionsMiddleware``'s, computed by
running them). ``tests/test_edge.py`` sends the same requests to both and
compares the answers.

Everything else goes to Django unchanged (a body already read is handed on
whole): another route or method, a session cookie, the browsable API, a
query string, an unknown or not-yet-kept credential, a credential that
would be refused, a permission or scope that would be refused, a body the
fast checks do not take as is (so Django answers its 400 with DRF's
messages), an address refused for failed authentications, an agent key
whose ``last_used`` is due to be written. Such a request is answered by
the viewset as if this layer were not there: nothing was counted or
written before it was handed on. The layer stands aside altogether (logged
once at WARNING, with the reason) when the project's configuration holds
something it cannot reproduce: another view at the route, a middleware
other than Django's standard ones and ServeStatic's/WhiteNoise's, a cache
for the auth answers or the throttles outside this process, a custom
exception handler, versioning, ``ATOMIC_REQUESTS``.
``SESSIONS_APP["EDGE"] = False`` turns it off.

Holds nothing of its own: the stores (and their connections) are the
API's (``api.views``), the caches Django's (``sessions_app.caching``); its
plan is rebuilt when settings change and is plain data after ``fork()``.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import orjson
from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.cache import BaseCache
from django.core.handlers.asgi import ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.core.signals import setting_changed
from django.db import close_old_connections
from django.http import HttpRequest, HttpResponse
from django.http.request import split_domain_port, validate_host
from django.urls import NoReverseMatch, Resolver404, resolve, reverse
from django.utils.log import log_response
from django.utils.module_loading import import_string
from rest_framework import exceptions
from rest_framework.authentication import BasicAuthentication, SessionAuthentication
from rest_framework.renderers import JSONRenderer
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import exception_handler

from .api import auth_cache
from .api.authentication import (
    AgentGrant,
    AgentKeyAuthentication,
    AgentKeyUser,
    CachedTokenAuthentication,
    use_is_noted,
)
from .api.bulk import ids_from, integer, records_from
from .api.negotiation import ExecutionSessionContentNegotiation
from .api.permissions import SCOPE_FOR_METHOD, ExecutionSessionPermissions
from .api.serializers import record_json
from .api.throttling import AuthFailureThrottle, throttles
from .api.views import (
    ExecutionSessionViewSet,
    _stores,
    api_error,
    foreign_agents,
    foreign_sessions,
    log_write,
)
from .caching import cache_for, in_process
from .conf import app_settings
from .models import ExecutionSession
from .storage.db import DjangoSessionStore
from .storage.db.portable import ThreadedPath
from .storage.errors import OutOfScope
from .storage.types import AGENT_ID_MAX, STARTED_AT_NS_MAX, SessionId, SessionRecord

logger = logging.getLogger("sessions_app.asgi")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Headers = tuple[tuple[bytes, bytes], ...]

#: The viewset's action for each call this layer answers, by method (detail route) or path (bulk).
DETAIL_ACTIONS = {"GET": "retrieve", "PUT": "update", "DELETE": "destroy"}
BULK_ACTIONS = {"bulk-save/": "bulk_save", "bulk-load/": "bulk_load", "bulk-delete/": "bulk_delete"}

#: Middleware that leaves the answers this layer gives as they are (beyond the headers it adds).
TRANSPARENT_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "servestatic.middleware.ServeStaticMiddleware",
    "servestatic.middleware.ServeStaticAsgiMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
)
#: Of those, the ones that add headers to an API answer: run once per scheme to learn them.
HEADER_MIDDLEWARE = (
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
)
#: Authentication classes that answer ``None`` for a header not theirs and a request without a cookie.
PASSING_AUTHENTICATION = (SessionAuthentication, BasicAuthentication)
JSON_TYPES = (b"application/json", b"application/json; charset=utf-8", b"application/json;charset=utf-8")
JSON_ACCEPTS = (None, b"*/*", b"application/json")
JSON_HEADER = (b"content-type", b"application/json")
#: Seconds a request waits for another of its credential to come back from Django (``_one_flight``).
FLIGHT_WAIT = 1.0


class SessionsEdge:
    """ASGI middleware: the API's hot calls answered here, everything else by ``app`` (Django's)."""

    def __init__(self, app: ASGIApp, *, namespace: str = "sessions_app_api") -> None:
        self.app = app
        self.namespace = namespace
        self._plan: Plan | None = None
        self._planned_for = -1
        # (event loop, credential) -> set when its request to Django is answered
        self._flights: dict[tuple[asyncio.AbstractEventLoop, bytes], asyncio.Event] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not app_settings.EDGE:
            return await self.app(scope, receive, send)
        plan = self.plan()
        call = plan.match(scope) if plan is not None else None
        if call is None:
            return await self.app(scope, receive, send)
        assert plan is not None
        admitted = await admit(plan, call, scope, receive)
        if isinstance(admitted, Handoff) and admitted.flight is not None and admitted.receive is not None:
            admitted = await self._one_flight(plan, call, scope, admitted, send)
        if isinstance(admitted, Handoff):
            if admitted.receive is not None:
                await self.app(scope, admitted.receive, send)
            return None  # None: the client went away while its body was read (or Django answered)
        await answer(plan, admitted, scope, send)
        return None

    async def _one_flight(
        self, plan: Plan, call: Call, scope: Scope, handoff: Handoff, send: Send
    ) -> Admitted | Handoff:
        """One request at a time to Django for a credential not kept here; the others wait for its answer.

        When a kept answer expires (``AUTH_CACHE_TIMEOUT``) or an agent key's
        ``last_used`` falls due, every request of that credential in flight
        would otherwise take Django's whole path at once: a burst of slow
        answers every few seconds under load. The first goes to Django (which
        keeps the answer); the others wait for it (at most ``FLIGHT_WAIT``
        seconds), then are admitted again from the start, served here if the
        answer is now kept, else handed on as before.
        """
        assert handoff.flight is not None and handoff.receive is not None
        key = (asyncio.get_running_loop(), handoff.flight)
        pending = self._flights.get(key)
        if pending is None:
            done = self._flights[key] = asyncio.Event()

            async def answered(message: Message) -> None:
                if message["type"] == "http.response.start":  # Django has kept its answers by now
                    self._flights.pop(key, None)
                    done.set()
                await send(message)

            try:
                await self.app(scope, handoff.receive, answered)
            finally:
                if self._flights.get(key) is done:
                    del self._flights[key]
                done.set()
            return Handoff(None)  # answered
        try:
            async with asyncio.timeout(FLIGHT_WAIT):
                await pending.wait()
        except TimeoutError:
            return handoff
        again = await admit(plan, call, scope, handoff.receive)
        if isinstance(again, Handoff):
            again.flight = None  # no second wait
        return again

    def plan(self) -> Plan | None:
        """What this layer serves under the current settings, or ``None`` (it stands aside)."""
        if self._planned_for != _settings_epoch:
            self._plan, self._planned_for = make_plan(self.namespace), _settings_epoch
        return self._plan


# -- the plan: what the configuration lets this layer serve ----------------------


@dataclass(frozen=True)
class Plan:
    prefix: str
    token: bool
    api_key: bool
    throttle_classes: tuple[type[Any], ...]
    detail_headers: tuple[tuple[bytes, bytes], ...]
    bulk_headers: tuple[tuple[bytes, bytes], ...]
    https_headers: tuple[tuple[bytes, bytes], ...]
    http_headers: tuple[tuple[bytes, bytes], ...]
    allowed_hosts: tuple[str, ...]
    ssl_redirect: bool
    proxy_ssl_header: tuple[bytes, str] | None
    max_body: int | None
    failures: AuthFailureThrottle
    views: dict[str, ExecutionSessionViewSet]  # action -> the view DRF's throttles read (scope, action)
    store: DjangoSessionStore  # the API's, unscoped (a key's scoped ones: views._stores)
    auth_cache: BaseCache  # where the auth answers' generation is (in this process)
    hosts: dict[bytes, bool] = field(default_factory=dict)  # Host header -> allowed, a few kept
    made: threading.local = field(default_factory=threading.local)  # this thread's throttles

    def throttles(self) -> list[Any]:
        """The throttles, made once per thread: DRF's keep state only from ``allow_request`` to ``wait``.

        Both run back to back with no ``await`` between, so the requests of
        one event loop cannot interleave there.
        """
        made: list[Any] | None = getattr(self.made, "throttles", None)
        if made is None:
            made = self.made.throttles = throttles(self.throttle_classes)
        return made

    def match(self, scope: Scope) -> Call | None:
        path: str = scope["path"]
        if not path.startswith(self.prefix) or scope.get("root_path") or scope.get("query_string"):
            return None
        rest = path[len(self.prefix) :]
        method: str = scope["method"]
        if method == "POST":
            action = BULK_ACTIONS.get(rest)
            return None if action is None else Call(action, None)
        action = DETAIL_ACTIONS.get(method)
        if action is None or not rest.endswith("/") or "/" in rest[:-1] or "." in rest:
            return None
        try:
            return Call(action, SessionId.parse(rest[:-1]))
        except ValueError:
            return None  # Django's 404


@dataclass(frozen=True)
class Call:
    action: str
    session_id: SessionId | None


_settings_epoch = 0
_warned: set[str] = set()


def _new_epoch(**kwargs: Any) -> None:
    global _settings_epoch
    _settings_epoch += 1


setting_changed.connect(_new_epoch)


def make_plan(namespace: str) -> Plan | None:
    """The plan, or ``None`` with the reason logged once (a WARNING: the fast path is off)."""
    try:
        return _plan(namespace)
    except _StandAside as reason:
        why = str(reason)
    except Exception as exc:  # a configuration Django itself will report on its own routes
        why = f"the plan could not be made: {exc!r}"
    if why not in _warned:
        _warned.add(why)
        logger.warning("SessionsEdge: every request goes to Django: %s", why)
    return None


class _StandAside(Exception):
    """Why this configuration cannot be served here."""


def _plan(namespace: str) -> Plan:
    def require(condition: object, reason: str) -> None:
        if not condition:
            raise _StandAside(reason)

    try:
        prefix = reverse(f"{namespace}:session-list")
    except NoReverseMatch:
        raise _StandAside(f"no URL named {namespace}:session-list") from None
    require(settings.FORCE_SCRIPT_NAME is None, "FORCE_SCRIPT_NAME is set")
    detail = _resolved(prefix + "0" * 32 + "/")
    require(
        detail is not None
        and detail[1] == {"get": "retrieve", "put": "update", "patch": "partial_update", "delete": "destroy"},
        f"{prefix}<id>/ is not ExecutionSessionViewSet's detail route",
    )
    for path, action in BULK_ACTIONS.items():
        bulk = _resolved(prefix + path)
        require(bulk is not None and bulk[1] == {"post": action}, f"{prefix}{path} is not its bulk route")
    view = ExecutionSessionViewSet
    require(api_settings.EXCEPTION_HANDLER is exception_handler, "a custom EXCEPTION_HANDLER")
    require(view.versioning_class is None, "API versioning")
    require(
        view.content_negotiation_class is ExecutionSessionContentNegotiation, "another content negotiation"
    )
    require(
        view.renderer_classes and view.renderer_classes[0] is JSONRenderer,
        "the first renderer is not DRF's JSONRenderer",
    )
    require(api_settings.COMPACT_JSON and api_settings.UNICODE_JSON, "COMPACT_JSON or UNICODE_JSON is off")
    require(
        list(app_settings.PERMISSION_CLASSES) == [ExecutionSessionPermissions],
        "PERMISSION_CLASSES is not [ExecutionSessionPermissions]",
    )
    require(app_settings.AUTH_CACHE_TIMEOUT, "AUTH_CACHE_TIMEOUT is 0 (every call asks the database)")
    require(
        in_process(cache_for(app_settings.AUTH_CACHE_ALIAS)),
        "the auth cache is not in this process (its reads would block the event loop)",
    )
    require(
        in_process(AuthFailureThrottle().cache), "the failed-authentication counts are not in this process"
    )
    throttle_classes = tuple(app_settings.THROTTLE_CLASSES)
    for throttle in throttles(throttle_classes):
        require(
            isinstance(throttle, SimpleRateThrottle)
            and type(throttle).__module__.partition(".")[0] in ("rest_framework", "sessions_app"),
            f"{type(throttle).__qualname__} is not one of DRF's or this app's rate throttles",
        )
        require(
            in_process(getattr(throttle, "cache", None)),
            f"{type(throttle).__qualname__} counts in a cache outside this process",
        )
    require(
        not settings.DATABASES[app_settings.DATABASE_ALIAS].get("ATOMIC_REQUESTS"), "ATOMIC_REQUESTS is on"
    )
    require(
        not settings.PREPEND_WWW and not settings.DISALLOWED_USER_AGENTS,
        "PREPEND_WWW or DISALLOWED_USER_AGENTS",
    )
    require(not settings.USE_X_FORWARDED_HOST, "USE_X_FORWARDED_HOST is on")
    require(
        not (settings.STATIC_URL and prefix.startswith("/" + settings.STATIC_URL.lstrip("/"))), "STATIC_URL"
    )
    for path in settings.MIDDLEWARE:
        require(path in TRANSPARENT_MIDDLEWARE or _adapts(path), f"middleware {path} may change API answers")
    authenticators = list(view.authentication_classes)
    proxy = settings.SECURE_PROXY_SSL_HEADER
    return Plan(
        prefix=prefix,
        token=_first_taker(authenticators, CachedTokenAuthentication),
        api_key=_first_taker(authenticators, AgentKeyAuthentication),
        throttle_classes=throttle_classes,
        detail_headers=_view_headers(view, detail[1] if detail else {}),
        bulk_headers=_view_headers(view, {"post": "bulk_save"}),
        https_headers=_middleware_headers(secure=True),
        http_headers=_middleware_headers(secure=False),
        allowed_hosts=tuple(
            settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
        ),
        ssl_redirect=bool(settings.SECURE_SSL_REDIRECT),
        proxy_ssl_header=(
            None
            if not proxy
            else (proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode("latin-1"), proxy[1])
        ),
        max_body=settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        failures=AuthFailureThrottle(),
        auth_cache=cache_for(app_settings.AUTH_CACHE_ALIAS),
        store=_stores(app_settings.DATABASE_ALIAS, ExecutionSession, app_settings.NATIVE_ASYNC, None),
        views={
            action: ExecutionSessionViewSet(action=action)
            for action in (*DETAIL_ACTIONS.values(), *BULK_ACTIONS.values())
        },
    )


def _resolved(path: str) -> tuple[type[Any], dict[str, str]] | None:
    try:
        match = resolve(path)
    except Resolver404:
        return None
    cls = getattr(match.func, "cls", None)
    if cls is not ExecutionSessionViewSet:
        return None
    actions = dict(getattr(match.func, "actions", {}) or {})
    if actions.get("head") == actions.get("get"):
        actions.pop("head", None)  # DRF's view adds it to its mapping on its first call
    return cls, actions


def _adapts(path: str) -> bool:
    """Whether the middleware at ``path`` declares it leaves API answers alone (``edge_transparent = True``).

    Not any subclass of a transparent one: a subclass may add a header or answer itself.
    """
    try:
        middleware = import_string(path)
    except ImportError:
        return False
    return getattr(middleware, "edge_transparent", False) is True


def _first_taker(authenticators: list[type[Any]], wanted: type[Any]) -> bool:
    """Whether ``wanted`` is the class that answers its own header (each class before it passes)."""
    for cls in authenticators:
        if cls is wanted:
            return True
        if cls in (CachedTokenAuthentication, AgentKeyAuthentication) or issubclass(
            cls, PASSING_AUTHENTICATION
        ):
            continue  # answers None for the other header, and for a request without a cookie
        return False
    return False


def _view_headers(cls: type[Any], actions: dict[str, str]) -> tuple[tuple[bytes, bytes], ...]:
    """``Allow`` and ``Vary``, as DRF's ``finalize_response`` sets them on the route's answers."""
    if "get" in actions and "head" not in actions:  # as DRF's ViewSetMixin.as_view
        actions = {**actions, "head": actions["get"]}
    view = cls(action_map=actions)
    for method, action in actions.items():
        setattr(view, method, getattr(view, action))
    headers = view.default_response_headers
    return tuple((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())


class _Probe(HttpRequest):
    def __init__(self, *, secure: bool) -> None:
        super().__init__()
        self.secure = secure
        self.path = self.path_info = "/"

    def _get_scheme(self) -> str:
        return "https" if self.secure else "http"

    def is_secure(self) -> bool:
        return self.secure


def _middleware_headers(*, secure: bool) -> tuple[tuple[bytes, bytes], ...]:
    """The headers the project's header middleware adds to a JSON answer, learnt by running it."""
    response = HttpResponse(b"{}", content_type="application/json")
    request = _Probe(secure=secure)
    for path in reversed(settings.MIDDLEWARE):  # process_response runs in reverse order
        middleware = import_string(path)
        if isinstance(middleware, type) and any(
            issubclass(middleware, import_string(known)) for known in HEADER_MIDDLEWARE
        ):
            middleware(lambda request: response).process_response(request, response)
    return tuple(
        (name.lower().encode("latin-1"), value.encode("latin-1"))
        for name, value in response.headers.items()
        if name.lower() not in ("content-type", "content-length")
    )


# -- admitting a request: every check that can refuse, before anything counts ----------


@dataclass
class Handoff:
    """The request goes to Django; ``receive`` replays what was read (``None``: the client left).

    ``flight``: the credential whose answer this process does not keep yet
    (``SessionsEdge.__call__`` lets one such request at a time go to Django).
    """

    receive: Receive | None
    flight: bytes | None = None


@dataclass
class Admitted:
    """A request that passed every check: what to do, for whom, and the throttles' verdict."""

    call: Call
    user: Any
    agents: tuple[int, ...] | None
    secure: bool
    record: SessionRecord | None = None
    records: list[SessionRecord] | None = None
    ids: list[SessionId] | None = None
    throttled: exceptions.Throttled | None = None


class _Request:
    """What DRF's throttles and ``get_ident`` read of a request: ``META``, ``headers``, who, the method."""

    __slots__ = ("META", "auth", "headers", "method", "user")

    def __init__(self, meta: dict[str, str], headers: dict[str, str], method: str) -> None:
        self.META = meta
        self.headers = headers
        self.method = method
        self.user: Any = None
        self.auth: Any = None


async def admit(plan: Plan, call: Call, scope: Scope, receive: Receive) -> Admitted | Handoff:
    """Every check of the viewset, in an order that changes nothing before the last one.

    Django would refuse, or do something this layer does not, for any
    request handed on; the throttles count (the one side effect) only
    when every other check has passed.
    """
    keep = Handoff(receive)
    headers = _headers(scope)
    if headers is None or headers.get(b"accept") not in JSON_ACCEPTS:
        return handed(keep, "a cookie, a repeated header, or another Accept")
    secure = _is_secure(plan, scope, headers)
    if (plan.ssl_redirect and not secure) or not _host_allowed(plan, headers.get(b"host")):
        return handed(keep, "TLS redirect or host not allowed")
    client = scope.get("client")
    authorization = headers.get(b"authorization")
    if not client or authorization is None:
        return handed(keep, "no client address or no credential")
    data: Any = None
    if scope["method"] in ("PUT", "POST"):
        # The body first, as Django reads it before any check runs: a
        # credential revoked while it arrives is refused, as there.
        if headers.get(b"content-type", b"").lower() not in JSON_TYPES:
            return handed(keep, "not a JSON body")
        length = headers.get(b"content-length", b"")
        if not length.isdigit() or (plan.max_body is not None and int(length) > plan.max_body):
            # DRF reads no body without Content-Length (chunked, HTTP/2);
            # past DATA_UPLOAD_MAX_MEMORY_SIZE Django answers 400.
            return handed(keep, "no Content-Length, or a body past DATA_UPLOAD_MAX_MEMORY_SIZE")
        body, replay = await _read_body(receive, int(length))
        if replay is None:
            return Handoff(None)  # the client went away
        keep = Handoff(replay)
        if body is None:
            return handed(keep, "a body longer or shorter than its Content-Length")
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            return handed(keep, "the body is not JSON orjson reads")
    meta = {"REMOTE_ADDR": client[0]}
    readable = {}
    if b"x-forwarded-for" in headers:
        meta["HTTP_X_FORWARDED_FOR"] = readable["x-forwarded-for"] = headers[b"x-forwarded-for"].decode(
            "latin-1"
        )
    request = _Request(meta, readable, scope["method"])
    if plan.failures.wait_for(request) is not None:  # type: ignore[arg-type]
        return handed(keep, "the address is refused for failed authentications")  # Django answers the 429
    generation = auth_cache.current_generation(plan.auth_cache)
    credential = _credential(plan, authorization.decode("latin-1"), generation)
    if credential is None or credential is NOT_KEPT:
        keep.flight = authorization if credential is NOT_KEPT else None
        return handed(keep, "the credential is not kept here (or would be refused)")
    assert not isinstance(credential, _NotKept)
    request.user, request.auth = credential
    method = ExecutionSessionPermissions.action_methods.get(call.action, scope["method"])
    permitted = _permitted(request.user, request.auth, method, generation)
    if not permitted:
        keep.flight = authorization if permitted is None else None
        return handed(keep, "the permission is not kept here (or would be refused)")
    agents = request.auth.agent_ids if isinstance(request.auth, AgentGrant) else None
    admitted = Admitted(call, request.user, agents, secure)

    if scope["method"] in ("PUT", "POST"):
        try:
            _take_body(admitted, data)
        except (TypeError, ValueError, KeyError, exceptions.ValidationError):
            return handed(keep, "the body is not in its common form")
        if not _in_scope(admitted):
            return handed(keep, "a write outside the key's agents")

    # The commit point: DRF's check_throttles, each throttle asked and counting.
    view = plan.views[call.action]
    waits = [throttle.wait() for throttle in plan.throttles() if not throttle.allow_request(request, view)]
    if waits:
        known = [wait for wait in waits if wait is not None]
        admitted.throttled = exceptions.Throttled(max(known) if known else None)
    return admitted


def handed(handoff: Handoff, reason: str) -> Handoff:
    """``handoff``, with why at DEBUG (``sessions_app.asgi``): to see what the edge leaves to Django."""
    logger.debug("to Django: %s", reason)
    return handoff


def _headers(scope: Scope) -> dict[bytes, bytes] | None:
    """The request headers this layer reads; ``None`` for a cookie or a repeated one (Django's)."""
    found: dict[bytes, bytes] = {}
    for name, value in scope["headers"]:
        if name == b"cookie":
            return None
        if name in found:
            if name != b"x-forwarded-for":
                return None
            value = found[name] + b"," + value  # as Django joins them into META
        found[name] = value
    return found


def _is_secure(plan: Plan, scope: Scope, headers: dict[bytes, bytes]) -> bool:
    """``request.is_secure()``, with ``SECURE_PROXY_SSL_HEADER`` as Django reads it."""
    if plan.proxy_ssl_header is not None:
        name, secure_value = plan.proxy_ssl_header
        value = headers.get(name)
        if value is not None:
            return value.decode("latin-1").split(",", 1)[0].strip() == secure_value
    return scope.get("scheme") == "https"


def _host_allowed(plan: Plan, host: bytes | None) -> bool:
    """Django's ``get_host()`` check against ``ALLOWED_HOSTS``; the answers for 64 Host values kept."""
    if host is None:
        return False
    allowed = plan.hosts.get(host)
    if allowed is None:
        domain, _port = split_domain_port(host.decode("latin-1"))
        allowed = bool(domain) and validate_host(domain, plan.allowed_hosts)
        if len(plan.hosts) >= 64:
            plan.hosts.clear()
        plan.hosts[host] = allowed
    return allowed


class _NotKept:
    """``_credential``'s answer for a credential this process may keep once Django has answered it."""


NOT_KEPT = _NotKept()


def _credential(plan: Plan, header: str, generation: object) -> tuple[Any, Any] | _NotKept | None:
    """The user and auth of a kept, valid credential, as the authentication classes would answer.

    ``NOT_KEPT``: a token or key in its served form whose answer is not kept
    (yet, or no more), or a key whose ``last_used`` is due; ``None``: never
    served here (another scheme, a malformed header, an expired key).
    """
    keyword, space, key = header.partition(" ")
    if not (space and key and key.isascii() and key.isprintable() and " " not in key):
        return None
    keyword = keyword.lower()
    if keyword == CachedTokenAuthentication.keyword.lower() and plan.token:
        answer = auth_cache.kept("token", (key,), generation)
        return NOT_KEPT if answer is None else answer
    if keyword == AgentKeyAuthentication.keyword.lower() and plan.api_key:
        prefix, dot, _secret = key.partition(".")
        if not (dot and prefix.isalnum() and len(prefix) <= 8):
            return None
        grant = auth_cache.kept("agent-key", (key,), generation)
        if not isinstance(grant, AgentGrant) or not use_is_noted(grant):
            return NOT_KEPT  # unknown here, or its last_used is due: Django writes it
        if grant.expires_at is not None and grant.expires_at <= time.time():
            return None
        return AgentKeyUser(grant), grant
    return None


def _permitted(user: Any, auth: Any, method: str | None, generation: object) -> bool | None:
    """``ExecutionSessionPermissions.has_permission``, from its kept answer (``None``: not kept)."""
    if isinstance(auth, AgentGrant):
        return ExecutionSessionViewSet.agent_scoped and SCOPE_FOR_METHOD.get(method or "", "") in auth.scopes
    answer = auth_cache.kept(
        "perms",
        ExecutionSessionPermissions.answer_key(ExecutionSessionPermissions, user, method, ExecutionSession),
        generation,
    )
    return None if answer is None else answer is True


async def _read_body(receive: Receive, length: int) -> tuple[bytes | None, Receive | None]:
    """The body if it is ``length`` bytes, and a ``receive`` that replays what was read.

    ``(None, replay)``: more or fewer bytes came than ``length`` said (what
    was read is replayed for Django). ``(None, None)``: the client left.
    """
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None, None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = bool(message.get("more_body"))
        if more and size > length:
            return None, _replay(chunks, receive, more=True)
    body = b"".join(chunks)
    return (body if size == length else None), _replay([body], receive, more=False)


def _replay(chunks: list[bytes], receive: Receive, *, more: bool) -> Receive:
    pending = list(chunks)

    async def replayed() -> Message:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": more or bool(pending)}
        return await receive()

    return replayed


def _take_body(admitted: Admitted, data: Any) -> None:
    """The body as the viewset would validate it, taken only in its common form (else ``ValueError``)."""
    action = admitted.call.action
    if action == "update":
        if type(data) is not dict:
            raise TypeError
        session_id = admitted.call.session_id
        assert session_id is not None
        named = data.get("session_id")
        if named is not None and (type(named) is not str or SessionId.parse(named) != session_id):
            raise ValueError
        if "session_id" in data and named is None:
            raise ValueError  # null: the serializer's 400
        admitted.record = SessionRecord(
            session_id,
            integer(data["agent_id"], AGENT_ID_MAX),
            integer(data["started_at_ns"], STARTED_AT_NS_MAX),
        )
    elif action == "bulk_save":
        admitted.records = records_from(data, app_settings.MAX_BULK)
    else:
        admitted.ids = ids_from(data, app_settings.MAX_BULK)


def _in_scope(admitted: Admitted) -> bool:
    """The viewset's ``check_agent``: a key writes only for its agents."""
    agents = admitted.agents
    if agents is None:
        return True
    if admitted.record is not None:
        return admitted.record.agent_id in agents
    if admitted.records is not None:
        return foreign_agents(admitted.records, agents) is None
    return True


# -- answering -------------------------------------------------------------------


async def answer(plan: Plan, admitted: Admitted, scope: Scope, send: Send) -> None:
    """Run the call on the store's native path and send what the viewset would answer.

    An answer of 400 or more is logged on ``django.request`` as Django's
    handler logs it (a WARNING, an ERROR from 500). An exception the
    viewset would not have turned into an answer (a bug) gets Django's own
    500: ``handler500``, its log line and ``got_request_exception``.
    """
    call = admitted.call
    extra: tuple[tuple[bytes, bytes], ...] = ()
    security = plan.https_headers if admitted.secure else plan.http_headers
    try:
        if admitted.throttled is not None:
            raise admitted.throttled
        status, data = await _run(plan, admitted)
    except Exception as exc:
        error = api_error(exc, None if call.session_id is None else str(call.session_id))
        if not isinstance(error, exceptions.APIException):
            await _send_django_500(scope, exc, security, send)
            return
        status, data, extra = _error(error)
    route = plan.bulk_headers if call.session_id is None else plan.detail_headers
    if data is None:
        body = b""
        headers = [(b"content-length", b"0"), *route, *security, *extra]
    else:
        body = data if isinstance(data, bytes) else orjson.dumps(data)
        headers = [JSON_HEADER, (b"content-length", b"%d" % len(body)), *route, *security, *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
    if status >= 400:
        log_response(
            "%s: %s",
            HTTPStatus(status).phrase,
            scope["path"],
            response=HttpResponse(status=status),
            request=ASGIRequest(scope, io.BytesIO()),
        )


async def _send_django_500(scope: Scope, exc: Exception, security: Headers, send: Send) -> None:
    request = ASGIRequest(scope, io.BytesIO())
    response = await sync_to_async(response_for_exception)(request, exc)
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.items()]
    present = {name for name, _ in headers}
    headers += [(name, value) for name, value in security if name not in present]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": response.content})


async def _run(plan: Plan, admitted: Admitted) -> tuple[int, Any]:
    store = plan.store
    if admitted.agents is not None:
        alias, native = app_settings.DATABASE_ALIAS, app_settings.NATIVE_ASYNC
        store = _stores(alias, ExecutionSession, native, admitted.agents)
    if store.path_name != ThreadedPath.name:
        return await _call(store, admitted)
    # Django's own connection (MySQL/MariaDB, or NATIVE_ASYNC off): its
    # lifecycle as Django's handler gives it to a request, a thread of the
    # request's own and close_old_connections() before and after
    # (CONN_MAX_AGE, CONN_HEALTH_CHECKS).
    async with ThreadSensitiveContext():
        await sync_to_async(close_old_connections)()
        try:
            return await _call(store, admitted)
        finally:
            await sync_to_async(close_old_connections)()


async def _call(store: DjangoSessionStore, admitted: Admitted) -> tuple[int, Any]:
    call = admitted.call
    session_id = call.session_id
    if call.action == "retrieve":
        assert session_id is not None
        return 200, record_json(await store.load(session_id))
    if call.action == "update":
        record = admitted.record
        assert record is not None
        created = await store.upsert(record)
        log_write(admitted.user, "created" if created else "replaced", record.session_id)
        return (201 if created else 200), record_json(record)
    if call.action == "destroy":
        assert session_id is not None
        await store.delete(session_id)
        log_write(admitted.user, "deleted", session_id)
        return 204, None
    if call.action == "bulk_save":
        records = admitted.records or []
        try:
            saved = await store.save_many_counted(records)
        except OutOfScope as exc:
            raise foreign_sessions(records, exc) from None
        if saved:
            log_write(admitted.user, f"saved in bulk with {saved - 1} others", records[-1].session_id)
        return 200, {"saved": saved}
    ids = admitted.ids or []
    if call.action == "bulk_load":
        found = await store.load_many(ids)
        return 200, {"sessions": [record_json(record) for record in found.values()]}
    deleted = await store.delete_many_counted(ids)
    if ids:
        log_write(admitted.user, f"deleted in bulk ({deleted} of {len(ids)} existed)", ids[0])
    return 200, {"deleted": deleted}


def _error(error: exceptions.APIException) -> tuple[int, bytes, Headers]:
    """What the viewset's ``handle_exception`` answers for ``error``, rendered as DRF renders it.

    DRF's ``exception_handler`` (the plan requires it) less its
    ``set_rollback()``: no atomic block of Django's is open here, and
    looking for one builds every database connection wrapper of the
    request context, a large part of a 404's cost.
    """
    headers: list[tuple[bytes, bytes]] = []
    if getattr(error, "auth_header", None):
        headers.append((b"www-authenticate", str(error.auth_header).encode("latin-1")))  # type: ignore[attr-defined]
    if getattr(error, "wait", None):
        headers.append((b"retry-after", b"%d" % error.wait))  # type: ignore[attr-defined]
    data = error.detail if isinstance(error.detail, (list, dict)) else {"detail": error.detail}
    return error.status_code, JSONRenderer().render(data, "application/json", {}), tuple(headers)
