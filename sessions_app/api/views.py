"""``ExecutionSessionViewSet``: the REST face of the store.

Every write is the store's own statement: ``PUT`` is the contract's
``save`` (an atomic upsert that reports whether it created), ``POST`` a
plain ``INSERT`` (409 when the id exists), ``DELETE`` the idempotent delete.
Reads go through the ORM so that django-filter and cursor pagination apply.

Under WSGI and ASGI alike this is plain DRF, served synchronously. Under
ASGI, ``sessions_app.asgi.SessionsEdge`` answers the calls agents make all
day (``GET``/``PUT``/``DELETE`` of ``sessions/{id}/`` and the bulk calls)
ahead of Django with the same policies and the same answers, and hands
this viewset everything else.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import orjson
from django.db import Error as DatabaseError
from django.db import transaction
from django.http import Http404, HttpResponse
from django.http.response import HttpResponseBase
from django.utils.translation import gettext_lazy as _
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
)
from rest_framework import exceptions, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from ..conf import app_settings
from ..models import ExecutionSession
from ..storage.db import DjangoSessionStore, SyncDjangoSessionStore, backend_errors
from ..storage.errors import BackendError, ConflictError, NotFound, OutOfScope, SerializationError
from ..storage.types import SessionId, SessionRecord
from .authentication import AgentGrant
from .bulk import ids_from, records_from
from .fields import SessionIdField
from .filters import ExecutionSessionFilter
from .negotiation import ExecutionSessionContentNegotiation
from .pagination import ExecutionSessionCursorPagination
from .parsers import BulkJSONParser, SafeJSONParser
from .serializers import ExecutionSessionBodySerializer, ExecutionSessionSerializer, record_json
from .throttling import throttles

logger = logging.getLogger("sessions_app.api")


class Conflict(exceptions.APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = _("A session with this id already exists.")
    default_code = "conflict"


NOT_YOUR_AGENT = _("This key may not act for agent {agent_id}.")
NOT_YOUR_SESSION = _("This session is stored under an agent this key may not act for.")


class StoredDataUnreadable(exceptions.APIException):
    status_code = status.HTTP_500_INTERNAL_SERVER_ERROR
    default_detail = _("A stored session does not decode; an operator has been told.")
    default_code = "stored_data_unreadable"


class ServiceUnavailable(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = _("The session database is unavailable; try again later.")
    default_code = "database_unavailable"


_ID_PARAMETER = OpenApiParameter(
    "session_id",
    OpenApiTypes.UUID,
    OpenApiParameter.PATH,
    description="Canonical UUID text, or 32 hex digits. A malformed id is a 404.",
)
_ERROR = OpenApiResponse(description='An error: {"detail": ...}, or field messages for a 400.')
# Answers any call may get: no or bad credentials, a missing permission,
# too many requests, and the database being unreachable.
_ALWAYS = {
    401: OpenApiResponse(description="Not authenticated."),
    403: OpenApiResponse(
        description="Authenticated, but without the model permission (a user) or the scope (an agent "
        "key) this call needs; or, with an agent key, a write for an agent or over a session outside "
        "the key's agents."
    ),
    429: OpenApiResponse(description="Throttled; see the Retry-After header."),
    503: OpenApiResponse(description="The session database is unavailable; retry later."),
}


class BulkSessionSerializer(ExecutionSessionSerializer):
    """One record of a bulk save: the same fields, the id required (a save names its session)."""

    session_id = SessionIdField()


class BulkSaveBody(serializers.Serializer):  # type: ignore[type-arg]
    sessions = BulkSessionSerializer(many=True)


class BulkIdsBody(serializers.Serializer):  # type: ignore[type-arg]
    session_ids = serializers.ListField(child=SessionIdField())


class BulkSaved(serializers.Serializer):  # type: ignore[type-arg]
    saved = serializers.IntegerField(
        help_text="Distinct ids saved (a repeated id counts once: the last wins)."
    )


class BulkLoaded(serializers.Serializer):  # type: ignore[type-arg]
    sessions = ExecutionSessionSerializer(many=True)


class BulkDeleted(serializers.Serializer):  # type: ignore[type-arg]
    deleted = serializers.IntegerField(help_text="How many of the ids existed.")


_EXAMPLE_ID = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
_BULK_400 = OpenApiResponse(
    description="Not a list, more than SESSIONS_APP['MAX_BULK'] items, or bad items: "
    '{"sessions": {"<index>": {"<field>": ["..."]}}}; nothing is written.'
)


@extend_schema_view(
    list=extend_schema(
        summary="List sessions, newest start first (cursor pagination)",
        responses={
            200: ExecutionSessionSerializer(many=True),
            400: OpenApiResponse(description="A filter value out of range or not an integer."),
            404: OpenApiResponse(description="The cursor is not one this API gave out."),
            **_ALWAYS,
        },
    ),
    retrieve=extend_schema(
        summary="Load one session",
        parameters=[_ID_PARAMETER],
        responses={200: ExecutionSessionSerializer, 404: _ERROR, **_ALWAYS},
    ),
    create=extend_schema(
        summary="Create a session (its id is generated when omitted)",
        responses={201: ExecutionSessionSerializer, 400: _ERROR, 409: _ERROR, **_ALWAYS},
    ),
    update=extend_schema(
        summary="Save a session: create it or replace it, as the contract's save",
        parameters=[_ID_PARAMETER],
        request=ExecutionSessionBodySerializer,
        responses={
            200: OpenApiResponse(ExecutionSessionSerializer, description="Replaced an existing session."),
            201: OpenApiResponse(ExecutionSessionSerializer, description="Created the session."),
            400: _ERROR,
            404: OpenApiResponse(description="The session id in the URL is malformed."),
            **_ALWAYS,
        },
    ),
    partial_update=extend_schema(
        summary="Change agent_id or started_at_ns of an existing session",
        parameters=[_ID_PARAMETER],
        request=ExecutionSessionBodySerializer,
        responses={200: ExecutionSessionSerializer, 400: _ERROR, 404: _ERROR, **_ALWAYS},
    ),
    destroy=extend_schema(
        summary="Delete a session; deleting an absent one also succeeds",
        parameters=[_ID_PARAMETER],
        responses={
            204: OpenApiResponse(description="Deleted, or was already absent."),
            404: OpenApiResponse(description="The session id in the URL is malformed."),
            **_ALWAYS,
        },
    ),
)
class ExecutionSessionViewSet(viewsets.GenericViewSet):  # type: ignore[type-arg]
    """List, load, create, save, change and delete execution sessions, one or many at a time.

    A request made with an agent key sees only its agents' sessions, as
    under row-level security: another agent's session is absent (404, left
    out of lists and bulk loads), deletes leave it alone (204, not
    counted), and a write for another agent, or over its session, is 403
    with nothing written. The store enforces it in the statement that
    reads or writes (``DjangoSessionStore.for_agents``).
    """

    queryset = ExecutionSession.objects.all()
    serializer_class = ExecutionSessionSerializer
    # JSON, and urlencoded forms for the browsable API; no multipart (nothing here is a file).
    parser_classes = [SafeJSONParser, FormParser]
    filter_backends = [DjangoFilterBackend]
    filterset_class = ExecutionSessionFilter
    pagination_class = ExecutionSessionCursorPagination
    lookup_url_kwarg = "session_id"
    content_negotiation_class = ExecutionSessionContentNegotiation

    #: Serves agent keys, limited to their agents (``ExecutionSessionPermissions`` reads it).
    agent_scoped = True

    _permissions: list[Any] | None = None
    _throttles: list[Any] | None = None

    def get_permissions(self) -> list[Any]:
        # Built once per request (a viewset instance serves one): DRF asks for them in each check.
        if self._permissions is None:
            self._permissions = [permission() for permission in app_settings.PERMISSION_CLASSES]
        return self._permissions

    def get_throttles(self) -> list[Any]:
        if self._throttles is None:
            self._throttles = throttles(app_settings.THROTTLE_CLASSES)
        return self._throttles

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        """DRF's ``initial``, with throttles checked before permissions.

        DRF checks permissions before throttles, so it refuses an
        unpermitted request before counting it. Here every request counts.
        (Failed authentications are counted by the authentication classes
        themselves: ``throttling``.)
        """
        self.format_kwarg = self.get_format_suffix(**kwargs)
        request.accepted_renderer, request.accepted_media_type = self.perform_content_negotiation(request)
        request.version, request.versioning_scheme = self.determine_version(request, *args, **kwargs)
        self.perform_authentication(request)
        self.check_throttles(request)
        self.check_permissions(request)

    def agent_scope(self) -> tuple[int, ...] | None:
        """The agents an agent key acts for, or ``None`` for a user (every agent, by model permission)."""
        grant = getattr(getattr(self, "request", None), "auth", None)
        return grant.agent_ids if isinstance(grant, AgentGrant) else None

    def get_queryset(self) -> Any:
        queryset = super().get_queryset().using(app_settings.DATABASE_ALIAS)
        agents = self.agent_scope()
        return queryset if agents is None else queryset.filter(agent_id__in=agents)

    @property
    def store(self) -> SyncDjangoSessionStore:
        return self.async_store.sync

    @property
    def async_store(self) -> DjangoSessionStore:
        return _stores(
            app_settings.DATABASE_ALIAS, self.queryset.model, app_settings.NATIVE_ASYNC, self.agent_scope()
        )

    def check_agent(self, agent_id: int) -> None:
        """403 naming ``agent_id`` when an agent key may not act for it."""
        agents = self.agent_scope()
        if agents is not None and agent_id not in agents:
            raise exceptions.PermissionDenied({"agent_id": [NOT_YOUR_AGENT.format(agent_id=agent_id)]})

    def url_session_id(self) -> SessionId:
        try:
            return SessionId.parse(self.kwargs[self.lookup_url_kwarg])
        except ValueError:
            raise Http404 from None

    def handle_exception(self, exc: Exception) -> Response:
        return super().handle_exception(api_error(exc, self.kwargs.get(self.lookup_url_kwarg)))

    # -- reads ---------------------------------------------------------------

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        queryset = self.filter_queryset(self.get_queryset())
        with backend_errors(app_settings.DATABASE_ALIAS, "session API list"):
            page = self.paginate_queryset(queryset)
        return self.get_paginated_response(self.get_serializer(page, many=True).data)

    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        return self.answer(record_json(self.store.load(self.url_session_id())))

    # -- writes --------------------------------------------------------------

    def body(self, request: Request, *, partial: bool = False) -> ExecutionSessionSerializer:
        """The request body, validated (a 400 naming each bad field otherwise)."""
        serializer = ExecutionSessionSerializer(
            data=request.data, partial=partial, context=self.get_serializer_context()
        )
        serializer.is_valid(raise_exception=True)
        return serializer

    def create(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        serializer = self.body(request)
        record = serializer.to_record()
        self.check_agent(record.agent_id)
        self.store.insert(record)
        self._log_write("created", record.session_id)
        return self.answer(record_json(record), status=status.HTTP_201_CREATED)

    def update(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        record = self._record_to_save(request)
        return self._saved(record, created=self.store.upsert(record))

    def _record_to_save(self, request: Request) -> SessionRecord:
        session_id = self.url_session_id()
        serializer = self.body(request)
        self._check_body_id(serializer, session_id)
        record = serializer.to_record(session_id)
        self.check_agent(record.agent_id)
        return record

    def _saved(self, record: SessionRecord, *, created: bool) -> HttpResponseBase:
        self._log_write("created" if created else "replaced", record.session_id)
        code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
        return self.answer(record_json(record), status=code)

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        session_id = self.url_session_id()
        if self.agent_scope() is not None and not self.get_queryset().filter(pk=session_id).exists():
            # Another agent's session is absent to a key, whatever the body says.
            raise NotFound(str(session_id))
        serializer = self.body(request, partial=True)
        self._check_body_id(serializer, session_id)
        changes = {
            name: value
            for name, value in serializer.validated_data.items()
            if name in ("agent_id", "started_at_ns")
        }
        if "agent_id" in changes:
            self.check_agent(changes["agent_id"])
        with (
            backend_errors(app_settings.DATABASE_ALIAS, "session API patch"),
            transaction.atomic(using=app_settings.DATABASE_ALIAS),
        ):
            # One UPDATE changes only the named columns (a key's: only among
            # its agents' rows); the row is then read back in the same
            # transaction for the answer.
            if changes and not self.get_queryset().filter(pk=session_id).update(**changes):
                raise NotFound(str(session_id))
            record = self.store.load(session_id)
        if changes:
            self._log_write("changed " + ", ".join(sorted(changes)), session_id)
        return self.answer(record_json(record))

    def destroy(self, request: Request, *args: Any, **kwargs: Any) -> HttpResponseBase:
        session_id = self.url_session_id()  # a malformed id is a 404, as for every method
        self.store.delete(session_id)
        return self._deleted(session_id)

    def _deleted(self, session_id: SessionId) -> HttpResponseBase:
        self._log_write("deleted", session_id)
        return self.answer(None, status=status.HTTP_204_NO_CONTENT)

    # -- bulk ----------------------------------------------------------------

    @extend_schema(
        summary="Save many sessions in one transaction, all or nothing (as PUT, for each)",
        request=BulkSaveBody,
        responses={200: BulkSaved, 400: _BULK_400, **_ALWAYS},
        examples=[
            OpenApiExample(
                "two sessions",
                request_only=True,
                value={
                    "sessions": [
                        {"session_id": _EXAMPLE_ID, "agent_id": 42, "started_at_ns": "1764067200123456789"},
                        {"session_id": "0f1e2d3c4b5a49788695a4b3c2d1e0f1", "agent_id": 7, "started_at_ns": 1},
                    ]
                },
            )
        ],
    )
    @action(detail=False, methods=["post"], url_path="bulk-save", parser_classes=[BulkJSONParser])
    def bulk_save(self, request: Request) -> HttpResponseBase:
        records = records_from(request.data, app_settings.MAX_BULK)
        refused = foreign_agents(records, self.agent_scope())
        if refused is not None:
            raise refused
        try:
            saved = self.store.save_many(records)
        except OutOfScope as exc:
            raise foreign_sessions(records, exc) from None
        if saved:
            self._log_write(f"saved in bulk with {saved - 1} others", records[-1].session_id)
        return self.answer({"saved": saved})

    @extend_schema(
        summary="Load many sessions; absent ids are left out",
        request=BulkIdsBody,
        responses={200: BulkLoaded, 400: _BULK_400, **_ALWAYS},
        examples=[OpenApiExample("one id", request_only=True, value={"session_ids": [_EXAMPLE_ID]})],
    )
    @action(detail=False, methods=["post"], url_path="bulk-load", parser_classes=[BulkJSONParser])
    def bulk_load(self, request: Request) -> HttpResponseBase:
        found = self.store.load_many(ids_from(request.data, app_settings.MAX_BULK))
        return self.answer({"sessions": [record_json(record) for record in found.values()]})

    @extend_schema(
        summary="Delete many sessions in one transaction; absent ids are fine",
        request=BulkIdsBody,
        responses={200: BulkDeleted, 400: _BULK_400, **_ALWAYS},
        examples=[OpenApiExample("one id", request_only=True, value={"session_ids": [_EXAMPLE_ID]})],
    )
    @action(detail=False, methods=["post"], url_path="bulk-delete", parser_classes=[BulkJSONParser])
    def bulk_delete(self, request: Request) -> HttpResponseBase:
        ids = ids_from(request.data, app_settings.MAX_BULK)
        deleted = self.store.delete_many(ids)
        if ids:
            self._log_write(f"deleted in bulk ({deleted} of {len(ids)} existed)", ids[0])
        return self.answer({"deleted": deleted})

    # -- helpers -------------------------------------------------------------

    def answer(self, data: Any, status: int = status.HTTP_200_OK) -> HttpResponseBase:
        """``Response(data, status)``, rendered now when JSON was negotiated.

        The same status, bytes and headers as DRF's ``Response`` (its
        renderer is called, with DRF's content-type rule; tested), in a
        plain ``HttpResponse``: Django would render a DRF ``Response`` in a
        worker thread under ASGI, so the async route used to render it and
        copy it into one; now neither the copy nor the template-response
        machinery is built. Any other renderer (the browsable API's) gets
        DRF's ``Response``. Override this to change every answer's form.
        """
        renderer = getattr(self.request, "accepted_renderer", None)
        if not isinstance(renderer, JSONRenderer):
            return Response(data, status=status)
        content = _compact_json(renderer, data, self.request.accepted_media_type)
        if content is None:
            content = renderer.render(data, self.request.accepted_media_type, self.get_renderer_context())
        if not content:  # DRF sends an empty body without a Content-Type
            response = HttpResponse(status=status)
            del response["Content-Type"]
            return response
        media_type = renderer.media_type
        content_type = f"{media_type}; charset={renderer.charset}" if renderer.charset else media_type
        return HttpResponse(content, status=status, content_type=content_type)

    @staticmethod
    def _check_body_id(serializer: ExecutionSessionSerializer, session_id: SessionId) -> None:
        body_id = serializer.validated_data.get("session_id")
        if body_id is not None and body_id != session_id:
            raise exceptions.ValidationError(
                {"session_id": [_("Must equal the session id in the URL, if given.")]}
            )

    def _log_write(self, action: str, session_id: SessionId) -> None:
        log_write(self.request.user, action, session_id)


def log_write(user: Any, action: str, session_id: SessionId) -> None:
    """The write log line (``sessions_app.api`` at INFO): the session, what happened, and who."""
    logger.info(
        "session %s %s by user %s (id %s)",
        session_id,
        action,
        user.get_username(),
        user.pk,
        extra={"session_id": str(session_id), "user_id": user.pk, "action": action},
    )


def api_error(exc: Exception, session_id: object = None) -> Exception:
    """The DRF exception the API answers for a store or database error; any other ``exc`` as it is.

    ``session_id`` (the URL's, if any) goes into the log line of a stored
    record that does not decode.
    """
    if isinstance(exc, NotFound):
        return exceptions.NotFound()
    if isinstance(exc, OutOfScope):
        return exceptions.PermissionDenied({"session_id": [NOT_YOUR_SESSION]})
    if isinstance(exc, ConflictError):
        return Conflict()
    if isinstance(exc, SerializationError):
        logger.error(
            "session API: the stored session %s does not decode: %s",
            session_id,
            exc,
            extra={"session_id": session_id},
            exc_info=exc,
        )
        return StoredDataUnreadable()
    if isinstance(exc, (BackendError, DatabaseError)):
        logger.error("session API: database unavailable: %s", exc)
        return ServiceUnavailable()
    return exc


def foreign_agents(records: list[SessionRecord], agents: tuple[int, ...] | None) -> Exception | None:
    """A bulk save's 403 naming each record for an agent outside ``agents``; ``None`` if there is none."""
    if agents is None:
        return None
    refused = {
        str(index): {"agent_id": [NOT_YOUR_AGENT.format(agent_id=record.agent_id)]}
        for index, record in enumerate(records)
        if record.agent_id not in agents
    }
    return exceptions.PermissionDenied({"sessions": refused}) if refused else None


def foreign_sessions(records: list[SessionRecord], exc: OutOfScope) -> Exception:
    """A bulk save's 403 naming each record whose id is stored under an agent the key may not act for."""
    foreign = set(exc.session_ids)
    return exceptions.PermissionDenied(
        {
            "sessions": {
                str(index): {"session_id": [NOT_YOUR_SESSION]}
                for index, record in enumerate(records)
                if bytes(record.session_id) in foreign
            }
        }
    )


@functools.lru_cache(maxsize=4096)
def _stores(
    alias: str, model: type[ExecutionSession], native_async: bool, agents: tuple[int, ...] | None
) -> DjangoSessionStore:
    """One store per database alias, model, ``NATIVE_ASYNC`` and agent scope (a key's agents, or None).

    A store is stateless past its path, which every store of an alias
    shares, so keeping them is safe; it spares each request with an agent
    key a scoped copy. Bounded: past 4,096 scopes the least used go.
    """
    store = DjangoSessionStore(alias, model=model, native_async=native_async)
    return store if agents is None else store.for_agents(agents)


def _compact_json(renderer: JSONRenderer, data: Any, media_type: str | None) -> bytes | None:
    """DRF's own JSON bytes for the API's answers, written by orjson; ``None`` where they could differ.

    DRF's ``JSONRenderer`` (compact, UTF-8, as configured here) writes the
    same bytes as orjson for what ``answer()`` gets: dicts, lists, strings
    and integers. Not for an indented answer (``Accept: ...; indent=4``), a
    subclass, other settings, or text holding U+2028/U+2029 (which DRF
    escapes). A 10,000-record bulk load spent a large share of its time in
    the standard library's encoder (``benchmarks/client_bench.py``).
    """
    if (
        data is None
        or type(renderer) is not JSONRenderer
        or not renderer.compact
        or renderer.ensure_ascii
        or (media_type and "indent" in media_type)
    ):
        return None
    try:
        content = orjson.dumps(data)
    except TypeError:  # a type orjson does not write as DRF's encoder would
        return None
    if b"\xe2\x80\xa8" in content or b"\xe2\x80\xa9" in content:
        return None
    return content
