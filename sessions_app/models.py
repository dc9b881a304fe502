"""``ExecutionSession``: one row per agent execution run; ``AgentKey``: an agent's credential."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _
from rest_framework_api_key.models import AbstractAPIKey, APIKeyManager

from .fields import SessionIdField, UnsignedBigIntegerField
from .storage.types import AGENT_ID_MAX, SessionId, SessionRecord, check_agent_ids


class AbstractExecutionSession(models.Model):
    """The fields and behaviour of a session record, for subclassing.

    As ``django.contrib.sessions``' ``AbstractBaseSession``: a project that
    wants extra columns subclasses this in its own app instead of forking.
    """

    session_id = SessionIdField(
        _("session id"),
        primary_key=True,
        default=SessionId.new,
        help_text=_("16 raw bytes, shown and entered as a UUID."),
    )
    # Indexed together with the start time, in ExecutionSession.Meta.indexes:
    # an agent's sessions, newest first, are one index range.
    agent_id = models.PositiveBigIntegerField(
        _("agent id"),
        # The column's own range is 0..2**64-1 on MySQL (bigint unsigned);
        # the contract's is 0..2**63-1 everywhere.
        validators=[MaxValueValidator(AGENT_ID_MAX)],
        help_text=_("The agent that owns this session, 0..9223372036854775807."),
    )
    started_at_ns = UnsignedBigIntegerField(
        _("started at (ns)"),
        help_text=_("Start time in nanoseconds since the Unix epoch, 0..18446744073709551615."),
    )

    class Meta:
        abstract = True
        verbose_name = _("execution session")
        verbose_name_plural = _("execution sessions")

    def __str__(self) -> str:
        return str(self.session_id)

    def to_record(self) -> SessionRecord:
        """The domain value of this row; raises ``ValueError`` if the row is invalid."""
        return SessionRecord(self.session_id, self.agent_id, self.started_at_ns)

    @classmethod
    def from_record(cls, record: SessionRecord) -> AbstractExecutionSession:
        return cls(
            session_id=record.session_id,
            agent_id=record.agent_id,
            started_at_ns=record.started_at_ns,
        )


class ExecutionSession(AbstractExecutionSession):
    """A persisted execution session of one agent run."""

    class Meta(AbstractExecutionSession.Meta):
        abstract = False
        db_table = "sessions_app_executionsession"
        # Both serve their order without a sort, so a page costs the same
        # however large the table: the list (newest first, the id breaking
        # ties) and one agent's sessions (the API's agent_id filter, the
        # admin's agent search). A subclass of AbstractExecutionSession
        # should declare the same two.
        indexes = [
            models.Index(fields=["started_at_ns", "session_id"], name="sessions_app_started_idx"),
            models.Index(fields=["agent_id", "started_at_ns", "session_id"], name="sessions_app_agent_idx"),
        ]


SCOPES = ("read", "write", "delete")
"""What an agent key may do: ``read`` (GET, list, bulk-load), ``write`` (PUT, POST,
PATCH, bulk-save), ``delete`` (DELETE, bulk-delete)."""

MAX_KEY_AGENTS = 100
"""The most agents one key may act for (each is a bound parameter of every scoped statement)."""


def agent_ids_of(value: object) -> tuple[int, ...]:
    """``value`` as a sorted tuple of distinct agent ids; ``ValueError`` naming the field otherwise."""
    if not isinstance(value, (list, tuple, set, frozenset)):
        raise ValueError(f"agent_ids must be a list of integers in 0..{AGENT_ID_MAX}, got {value!r}")
    try:
        agents = check_agent_ids(value)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if not 1 <= len(agents) <= MAX_KEY_AGENTS:
        raise ValueError(f"agent_ids must name 1..{MAX_KEY_AGENTS} agents, got {len(agents)}")
    return agents


def scopes_of(value: object) -> tuple[str, ...]:
    """``value`` as the scopes in ``SCOPES`` order; ``ValueError`` naming the field otherwise."""
    if not isinstance(value, (list, tuple, set, frozenset)) or not value:
        raise ValueError(f"scopes must be a non-empty list of {', '.join(SCOPES)}; got {value!r}")
    unknown = [scope for scope in value if scope not in SCOPES]
    if unknown:
        raise ValueError(f"scopes must each be one of {', '.join(SCOPES)}; got {unknown!r}")
    return tuple(scope for scope in SCOPES if scope in value)


def validate_agent_ids(value: object) -> None:
    try:
        agent_ids_of(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid") from None


def validate_scopes(value: object) -> None:
    try:
        scopes_of(value)
    except ValueError as exc:
        raise ValidationError(str(exc), code="invalid") from None


class AgentKeyManager(APIKeyManager):
    """djangorestframework-api-key's manager: ``create_key(name=..., agent_ids=[...], scopes=[...])``."""

    def create_key(self, **kwargs: Any) -> tuple[AgentKey, str]:
        """A new key and its secret ``<prefix>.<secret>``: shown once, only its hash is stored."""
        kwargs["agent_ids"] = list(agent_ids_of(kwargs.get("agent_ids")))
        kwargs["scopes"] = list(scopes_of(kwargs.get("scopes", SCOPES)))
        obj, key = super().create_key(**kwargs)
        assert isinstance(obj, AgentKey)
        return obj, key


class AgentKey(AbstractAPIKey):
    """A credential an agent sends as ``Authorization: Api-Key <prefix>.<secret>``.

    Built on djangorestframework-api-key's ``AbstractAPIKey``: the row holds
    the public prefix and a SHA-512 hash of the key (never the key; the
    secret part has 32 random characters, about 190 bits, so a fast hash
    is the right one), a name, an optional expiry and a revoked flag that
    cannot be undone. This model adds what the key may do: the agents it
    acts for and its scopes. The API shows it only those agents' sessions
    (``DjangoSessionStore.for_agents``). ``last_used`` is written at most
    once a minute per key and process.
    """

    agent_ids = models.JSONField(
        _("agents"),
        default=list,
        validators=[validate_agent_ids],
        help_text=_("The agent ids this key acts for (1 to 100)."),
    )
    scopes = models.JSONField(
        _("scopes"),
        default=list,
        validators=[validate_scopes],
        help_text=_("read: load and list; write: save, create, change; delete: delete."),
    )
    last_used = models.DateTimeField(_("last used"), null=True, blank=True, editable=False)

    objects: ClassVar[AgentKeyManager] = AgentKeyManager()

    class Meta(AbstractAPIKey.Meta):
        # Plain text, as the base's Meta (its stubs type these as str).
        verbose_name = "agent key"
        verbose_name_plural = "agent keys"

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Refuse a key without a valid agent list and scope list (``ValidationError``), however made."""
        for field, check in (("agent_ids", agent_ids_of), ("scopes", scopes_of)):
            try:
                check(getattr(self, field))
            except ValueError as exc:
                raise ValidationError({field: [str(exc)]}) from None
        super().save(*args, **kwargs)

    def agents(self) -> tuple[int, ...]:
        return agent_ids_of(self.agent_ids)

    def scope_set(self) -> frozenset[str]:
        return frozenset(scopes_of(self.scopes))
