"""Model and form fields for the two values a plain Django field cannot hold.

``SessionIdField``
    16 raw bytes, stored in a real binary column (``bytea`` on PostgreSQL,
    ``BLOB`` on SQLite, ``binary(16)`` on MySQL/MariaDB, which cannot index a
    BLOB without a prefix length). Reads as ``SessionId``, a ``bytes``
    subtype whose ``str()`` is UUID text: that is what lets the admin put a
    binary primary key in a URL and in its log.

``UnsignedBigIntegerField``
    ``0..2**64-1`` in a signed 64-bit column. The database holds
    ``value - 2**63``: subtracting a constant keeps the order, so ``ORDER
    BY``, ``<`` and ``>`` in SQL agree with Python's order of the real
    values, on every database, with an ordinary B-tree index. ``from_db_value``
    adds the offset back, so Python code, lookups and ordering see plain ints.
    Arithmetic in SQL (``F() + 1``, ``Sum``) would see the offset values and
    is not supported.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.core import exceptions, validators
from django.core.exceptions import EmptyResultSet, FullResultSet
from django.db import models
from django.db.models import lookups
from django.utils.translation import gettext_lazy as _

from .storage.types import (
    STARTED_AT_NS_MAX,
    SessionId,
    check_int_range,
    decode_unsigned,
    encode_unsigned,
    parse_session_id,
)

# --- session ids ---------------------------------------------------------


class SessionIdFormField(forms.CharField):
    """A text input for a session id: UUID text or 32 hex digits."""

    default_error_messages = {
        "invalid": _("Enter a session id as a UUID (8-4-4-4-12 hex digits) or 32 hex digits."),
    }

    def __init__(self, **kwargs: Any) -> None:
        # No min/max_length: their validators would measure the parsed
        # 16-byte value, not the text. The widget still caps the input.
        kwargs.pop("max_length", None)
        super().__init__(**kwargs)
        self.widget.attrs.setdefault("maxlength", "36")
        self.widget.attrs.setdefault("size", "40")

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, (bytes, bytearray, memoryview)) and len(bytes(value)) == 16:
            return str(SessionId(value))
        return value

    def to_python(self, value: Any) -> Any:
        value = super().to_python(value)
        if value in self.empty_values:
            return None
        try:
            return parse_session_id(value.strip())
        except (TypeError, ValueError):
            raise exceptions.ValidationError(self.error_messages["invalid"], code="invalid") from None

    def has_changed(self, initial: Any, data: Any) -> bool:
        try:
            return bool(self.to_python(data) != self.to_python(self.prepare_value(initial)))
        except exceptions.ValidationError:
            return True


def validate_session_id_length(value: Any) -> None:
    if not isinstance(value, (bytes, bytearray, memoryview)) or len(bytes(value)) != 16:
        length = len(bytes(value)) if isinstance(value, (bytes, bytearray, memoryview)) else None
        raise exceptions.ValidationError(
            _("session_id must be exactly 16 bytes, got %(length)s."),
            code="invalid_length",
            params={"length": length if length is not None else type(value).__name__},
        )


class SessionIdField(models.BinaryField):  # type: ignore[type-arg]
    """A 16-byte binary id; reads as ``SessionId``, accepts bytes, ``SessionId`` or UUID text."""

    description = _("Session id (16 raw bytes, a UUID)")
    default_validators = [validate_session_id_length]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("editable", True)
        super().__init__(*args, **kwargs)

    def deconstruct(self) -> Any:
        name, path, args, kwargs = super().deconstruct()
        # Editable is this field's default; BinaryField's deconstruct would
        # otherwise write it into every migration.
        kwargs.pop("editable", None)
        if not self.editable:
            kwargs["editable"] = False
        return name, path, args, kwargs

    def db_type(self, connection: Any) -> str | None:
        if connection.vendor == "mysql":
            return "binary(16)"
        return super().db_type(connection)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        raw = bytes(value)
        # A row written behind the app's back may hold another length; hand
        # it over as plain bytes so that reading never fails, and let the
        # caller (the store, full_clean) report it.
        return SessionId(raw) if len(raw) == 16 else raw

    def to_python(self, value: Any) -> Any:
        if value is None or type(value) is SessionId:
            return value
        try:
            return parse_session_id(value)
        except (TypeError, ValueError) as exc:
            raise exceptions.ValidationError(str(exc), code="invalid") from None

    def get_prep_value(self, value: Any) -> Any:
        value = super().get_prep_value(value)
        if value is None:
            return None
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value)
        return self.to_python(value)

    def value_to_string(self, obj: models.Model) -> str:
        value = self.value_from_object(obj)
        return "" if value is None else str(parse_session_id(value))

    def formfield(self, **kwargs: Any) -> Any:
        return models.Field.formfield(self, **{"form_class": SessionIdFormField, **kwargs})


# --- unsigned 64-bit integers -------------------------------------------


class UnsignedBigIntegerField(models.BigIntegerField):  # type: ignore[type-arg]
    """``0..2**64-1`` stored order-preserving in a signed ``bigint``; see module docs."""

    description = _("Unsigned 64-bit integer")
    MAX_VALUE = STARTED_AT_NS_MAX

    @property
    def validators(self) -> list[Any]:
        # BigIntegerField derives its range from the column; the column is
        # signed but the value is not.
        return [
            validators.MinValueValidator(0),
            validators.MaxValueValidator(self.MAX_VALUE),
            *self._validators,  # type: ignore[attr-defined]
        ]

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if not prepared:
            value = self.get_prep_value(value)
        if value is None or not isinstance(value, int):
            # An expression or a placeholder for one: leave it to the compiler.
            return value
        check_int_range(self.name or "value", value, self.MAX_VALUE)
        return encode_unsigned(value)

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        if value is None:
            return None
        return decode_unsigned(value)

    def formfield(self, **kwargs: Any) -> Any:
        return super().formfield(
            **{"min_value": 0, "max_value": self.MAX_VALUE, "widget": forms.TextInput, **kwargs}
        )


class _UnsignedRangeLookup:
    """Answer comparisons with values outside 0..2**64-1 without asking the database.

    Django's own integer lookups do this with the *column's* range; here the
    column is signed and the field is not, so the check must use the field's.
    """

    underflow_exception: type[Exception] = EmptyResultSet
    overflow_exception: type[Exception] = EmptyResultSet

    def process_rhs(self, compiler: Any, connection: Any) -> Any:
        rhs = self.rhs  # type: ignore[attr-defined]
        if isinstance(rhs, int) and not isinstance(rhs, bool):
            if rhs < 0:
                raise self.underflow_exception
            if rhs > STARTED_AT_NS_MAX:
                raise self.overflow_exception
        return super().process_rhs(compiler, connection)  # type: ignore[misc]


@UnsignedBigIntegerField.register_lookup
class UnsignedExact(_UnsignedRangeLookup, lookups.Exact):
    pass


@UnsignedBigIntegerField.register_lookup
class UnsignedGreaterThan(_UnsignedRangeLookup, lookups.GreaterThan):
    underflow_exception = FullResultSet


@UnsignedBigIntegerField.register_lookup
class UnsignedGreaterThanOrEqual(
    _UnsignedRangeLookup, lookups.IntegerFieldFloatRounding, lookups.GreaterThanOrEqual
):
    underflow_exception = FullResultSet


@UnsignedBigIntegerField.register_lookup
class UnsignedLessThan(_UnsignedRangeLookup, lookups.IntegerFieldFloatRounding, lookups.LessThan):
    overflow_exception = FullResultSet


@UnsignedBigIntegerField.register_lookup
class UnsignedLessThanOrEqual(_UnsignedRangeLookup, lookups.LessThanOrEqual):
    overflow_exception = FullResultSet
