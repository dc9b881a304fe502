"""The Django admin for ``ExecutionSession``.

The binary primary key needs no special URL handling: it reads as
``SessionId``, whose ``str()`` is UUID text, so the admin's links, redirects
and log entries carry ``0f1e2d3c-...`` and the field parses that text back.

Built for tables of millions of rows: every page of the list and every
search that uses an index costs the same however large the table (the
indexes are in ``models.py``); the unfiltered list shows PostgreSQL's row
estimate instead of counting every row; only a search for part of an id
scans the table, and the search help says so.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.db.models import CharField, Func, PositiveBigIntegerField, QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.admin import APIKeyModelAdmin

from .api.serializers import ns_to_iso8601
from .fields import UnsignedBigIntegerField
from .models import SCOPES, AgentKey, ExecutionSession, agent_ids_of

NS_PER_SECOND = 1_000_000_000

# Above this many rows (by PostgreSQL's estimate) the unfiltered list shows
# the estimate instead of a COUNT(*), which reads every row.
ESTIMATE_COUNT_ABOVE = 100_000

PARTIAL_ID_PREFIX = "id:"
_HEX = frozenset("0123456789abcdef")


class LargeTablePaginator(Paginator):  # type: ignore[type-arg]
    """Django's paginator, counting the unfiltered table by estimate on PostgreSQL when it is large."""

    estimated = False

    @cached_property
    def count(self) -> int:
        queryset = self.object_list
        if isinstance(queryset, QuerySet) and not queryset.query.has_filters():
            estimate = _estimated_rows(queryset)
            if estimate is not None and estimate > ESTIMATE_COUNT_ABOVE:
                self.estimated = True
                return estimate
        return super().count


def _estimated_rows(queryset: QuerySet[Any]) -> int | None:
    """PostgreSQL's planner estimate of the table's rows (kept by autovacuum and ANALYZE)."""
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT reltuples FROM pg_class WHERE oid = %s::regclass", [queryset.model._meta.db_table]
        )
        row = cursor.fetchone()
    return int(row[0]) if row and row[0] >= 0 else None


class SessionIdHex(Func):
    """The session id as 32 lower-case hex digits, for partial-id search."""

    output_field = CharField()
    template = "encode(%(expressions)s, 'hex')"  # PostgreSQL

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, template="lower(hex(%(expressions)s))", **extra)

    as_mysql = as_sqlite


def utc_now() -> datetime:
    """The clock of the date filter (a function, so that tests can set it)."""
    return datetime.fromtimestamp(time.time(), tz=UTC)


class StartedAtFilter(admin.SimpleListFilter):
    """Filter by start date, in UTC: today, the past 7 days, this month, this year."""

    title = _("start date")
    parameter_name = "started"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        return [
            ("today", _("Today")),
            ("7d", _("Past 7 days")),
            ("month", _("This month")),
            ("year", _("This year")),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        now = utc_now()
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        since = {
            "today": today,
            "7d": today - timedelta(days=6),
            "month": today.replace(day=1),
            "year": today.replace(month=1, day=1),
        }.get(self.value() or "")
        if since is None:
            return queryset
        return queryset.filter(started_at_ns__gte=int(since.timestamp()) * NS_PER_SECOND)


@admin.register(ExecutionSession)
class ExecutionSessionAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ("session_id_text", "agent_id", "started_at_utc", "started_at_ns")
    list_display_links = ("session_id_text",)
    list_filter = (StartedAtFilter,)
    ordering = ("-started_at_ns", "-session_id")
    search_fields = ("session_id",)  # handled by get_search_results below
    search_help_text = _(
        "An agent id (digits) or a whole session id (UUID text or 32 hex digits): found through an index. "
        "Part of a session id (hex digits with a letter a-f, or id: and any hex digits) scans the whole "
        "table and is slow on a large one."
    )
    fields = ("session_id", "agent_id", "started_at_ns", "started_at_utc")
    readonly_fields = ("started_at_utc",)
    # Text inputs: a browser's number input rounds past 2**53.
    formfield_overrides = {
        PositiveBigIntegerField: {"widget": forms.TextInput},
        UnsignedBigIntegerField: {"widget": forms.TextInput},
    }
    list_per_page = 100
    show_full_result_count = False  # a COUNT(*) over a large table on every page is not free
    paginator = LargeTablePaginator

    @admin.display(description=_("session id"), ordering="session_id")
    def session_id_text(self, obj: ExecutionSession) -> str:
        return str(obj.session_id)

    @admin.display(description=_("started at (UTC)"), ordering="started_at_ns")
    def started_at_utc(self, obj: ExecutionSession) -> str:
        if obj.started_at_ns is None:
            return "-"
        return ns_to_iso8601(obj.started_at_ns)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        # Editing the primary key would save a copy under the new id.
        if obj is not None:
            return ("session_id", *self.readonly_fields)
        return self.readonly_fields

    def get_search_results(self, request: HttpRequest, queryset: QuerySet[Any], search_term: str) -> Any:
        """Digits are an agent id; 32 hex digits or UUID text a whole id; anything else hex, part of an id."""
        term = search_term.strip().lower()
        if not term:
            return queryset, False
        partial = term.startswith(PARTIAL_ID_PREFIX)
        digits = term.removeprefix(PARTIAL_ID_PREFIX).replace("-", "")
        if not digits or not set(digits) <= _HEX:
            return queryset.none(), False
        if len(digits) == 32:
            return queryset.filter(session_id=bytes.fromhex(digits)), False
        if term.isdigit() and not partial:
            agent_id = int(term)
            return (queryset.filter(agent_id=agent_id) if agent_id <= 2**63 - 1 else queryset.none()), False
        # Part of an id: compared with every row's hex text, a full scan.
        queryset = queryset.annotate(session_id_hex=SessionIdHex("session_id"))
        return queryset.filter(session_id_hex__contains=digits), False


class AgentIdsField(forms.Field):
    """Agent ids as text: ``42, 43`` (commas or spaces), each 0..2**63-1."""

    widget = forms.TextInput

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return ", ".join(map(str, value))
        return value

    def to_python(self, value: Any) -> list[int]:
        parts = str(value or "").replace(",", " ").split()
        if not all(part.isdigit() for part in parts):
            raise forms.ValidationError(_("Enter agent ids as whole numbers separated by commas."))
        try:
            return list(agent_ids_of([int(part) for part in parts]))
        except ValueError as exc:
            raise forms.ValidationError(str(exc)) from None


class AgentKeyForm(forms.ModelForm):  # type: ignore[type-arg]
    agent_ids = AgentIdsField(label=_("agents"), help_text=_("The agent ids this key acts for: 42, 43."))
    scopes = forms.MultipleChoiceField(
        label=_("scopes"),
        choices=[(scope, scope) for scope in SCOPES],
        initial=list(SCOPES),
        widget=forms.CheckboxSelectMultiple,
        help_text=_("read: load and list; write: save, create, change; delete: delete."),
    )

    class Meta:
        model = AgentKey
        fields = ("name", "agent_ids", "scopes", "expiry_date", "revoked")

    def clean_scopes(self) -> list[str]:
        chosen = self.cleaned_data["scopes"]
        return [scope for scope in SCOPES if scope in chosen]


@admin.register(AgentKey)
class AgentKeyAdmin(APIKeyModelAdmin):
    """Agent keys: djangorestframework-api-key's admin, which shows a new key's secret once.

    Revoke a key with the "revoked" box or the list's action; it cannot be
    undone. The secret is never stored, so it cannot be shown again: a lost
    key is revoked and replaced.
    """

    form = AgentKeyForm
    list_display = (  # type: ignore[assignment]
        *("prefix", "name", "agents", "scope_list"),
        *("expiry_date", "_has_expired", "revoked", "last_used"),
    )
    list_filter = ("revoked", "created")  # type: ignore[assignment]
    readonly_fields = ("prefix", "last_used")
    actions = ["revoke"]

    @admin.display(description=_("agents"))
    def agents(self, obj: AgentKey) -> str:
        return ", ".join(map(str, obj.agent_ids))

    @admin.display(description=_("scopes"))
    def scope_list(self, obj: AgentKey) -> str:
        return ", ".join(obj.scopes)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        fields = ("prefix", "last_used")
        if obj is not None and obj.revoked:
            # A revoked key is kept for the record; nothing about it changes.
            return (*fields, "name", "agent_ids", "scopes", "expiry_date", "revoked")
        return fields

    @admin.action(description=_("Revoke the selected agent keys (cannot be undone)"))
    def revoke(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        revoked = 0
        for key in queryset.filter(revoked=False):
            key.revoked = True
            key.save(update_fields=["revoked"])  # a signal per key: kept answers are retired
            revoked += 1
        self.message_user(request, _("Revoked %(count)d agent key(s).") % {"count": revoked})
