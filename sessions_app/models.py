"""``ExecutionSession``: one row per agent execution run."""

from __future__ import annotations

from django.core.validators import MaxValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from .fields import SessionIdField, UnsignedBigIntegerField
from .storage.types import AGENT_ID_MAX, SessionId, SessionRecord


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
