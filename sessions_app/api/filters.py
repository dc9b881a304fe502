"""List filters for ``GET /api/sessions/`` (django-filter)."""

from __future__ import annotations

from typing import Any

import django_filters
from django import forms
from django.utils.translation import gettext_lazy as _

from ..models import ExecutionSession
from ..storage.types import AGENT_ID_MAX, STARTED_AT_NS_MAX


class BoundedIntegerFilter(django_filters.Filter):  # type: ignore[misc]
    """An integer query parameter, validated by a form field with a range."""

    field_class = forms.IntegerField


def _integer_filter(field_name: str, lookup_expr: str, maximum: int, label: Any) -> BoundedIntegerFilter:
    return BoundedIntegerFilter(
        field_name=field_name,
        lookup_expr=lookup_expr,
        min_value=0,
        max_value=maximum,
        label=label,
    )


class ExecutionSessionFilter(django_filters.FilterSet):  # type: ignore[misc]
    """``agent_id`` (exact), ``started_after_ns`` (>) and ``started_before_ns`` (<).

    Both time bounds are strict, so ``?started_after_ns=X`` never repeats the
    session that started at exactly X. Values outside their range are a 400
    naming the parameter.
    """

    agent_id = _integer_filter("agent_id", "exact", AGENT_ID_MAX, _("Agent id"))
    started_after_ns = _integer_filter(
        "started_at_ns", "gt", STARTED_AT_NS_MAX, _("Started strictly after (ns)")
    )
    started_before_ns = _integer_filter(
        "started_at_ns", "lt", STARTED_AT_NS_MAX, _("Started strictly before (ns)")
    )

    class Meta:
        model = ExecutionSession
        fields = ["agent_id", "started_after_ns", "started_before_ns"]
