"""The Django admin for ``ExecutionSession``.

The binary primary key needs no special URL handling: it reads as
``SessionId``, whose ``str()`` is UUID text, so the admin's links, redirects
and log entries carry ``0f1e2d3c-...`` and the field parses that text back.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

from django import forms
from django.contrib import admin
from django.db.models import CharField, Func, PositiveBigIntegerField, Q, QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .api.serializers import ns_to_iso8601
from .fields import UnsignedBigIntegerField
from .models import ExecutionSession

NS_PER_SECOND = 1_000_000_000


class SessionIdHex(Func):
    """The session id as 32 lower-case hex digits, for partial-id search."""

    output_field = CharField()
    template = "encode(%(expressions)s, 'hex')"  # PostgreSQL

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return super().as_sql(compiler, connection, template="lower(hex(%(expressions)s))", **extra)

    as_mysql = as_sqlite


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
        now = datetime.fromtimestamp(time.time(), tz=UTC)
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
    search_help_text = _("A full or partial session id (UUID text or hex digits), or an agent id.")
    fields = ("session_id", "agent_id", "started_at_ns", "started_at_utc")
    readonly_fields = ("started_at_utc",)
    # Text inputs: a browser's number input rounds past 2**53.
    formfield_overrides = {
        PositiveBigIntegerField: {"widget": forms.TextInput},
        UnsignedBigIntegerField: {"widget": forms.TextInput},
    }
    list_per_page = 100
    show_full_result_count = False  # a COUNT(*) over a large table on every page is not free

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
        term = search_term.strip()
        if not term:
            return queryset, False
        condition = Q(pk__in=[])
        digits = term.replace("-", "").lower()
        if digits and all(c in "0123456789abcdef" for c in digits):
            if len(digits) == 32:
                condition |= Q(session_id=bytes.fromhex(digits))
            else:
                # A partial id scans the table; full ids use the primary key.
                queryset = queryset.annotate(session_id_hex=SessionIdHex("session_id"))
                condition |= Q(session_id_hex__contains=digits)
        if term.isdigit() and int(term) <= 2**63 - 1:
            condition |= Q(agent_id=int(term))
        return queryset.filter(condition), False
