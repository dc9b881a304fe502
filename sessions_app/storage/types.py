"""The domain values of the storage contract: ``SessionId`` and ``SessionRecord``.

The ranges live here, once, and so does the one value encoding they need
(``encode_unsigned``: ``started_at_ns`` in a signed 64-bit column). The model
fields, the admin form, the REST serializers and the stores all validate
through ``check_int_range`` and ``SessionId.parse``, so an error says the same
thing wherever it is raised.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass

AGENT_ID_MAX = 2**63 - 1
"""Largest agent id: the top of a signed 64-bit column."""

STARTED_AT_NS_MAX = 2**64 - 1
"""Largest start time: the top of the runtime's ``u64`` nanoseconds."""

SESSION_ID_LENGTH = 16

_SIGNED_OFFSET = 2**63

# How a frozen dataclass's own __init__ sets its fields.
_set_field = object.__setattr__


def encode_unsigned(value: int) -> int:
    """Map ``0..2**64-1`` onto a signed 64-bit column's ``-2**63..2**63-1``.

    Subtracting a constant keeps the order, so SQL comparisons and ``ORDER
    BY`` on the stored value agree with Python's order of the real values.
    """
    return value - _SIGNED_OFFSET


def decode_unsigned(stored: int) -> int:
    """Inverse of ``encode_unsigned``."""
    return int(stored) + _SIGNED_OFFSET


def check_int_range(field: str, value: object, maximum: int) -> int:
    """Return ``value`` if it is an ``int`` in ``0..maximum``, else raise.

    ``bool`` is refused although Python counts it as an ``int``: ``True`` is
    never a meaningful agent id or timestamp. Raises ``TypeError`` for a
    value that is not an integer at all and ``ValueError`` for a bool or an
    integer out of range; both name the field and the allowed range.
    """
    expected = f"{field} must be an integer in 0..{maximum}"
    if isinstance(value, bool):
        raise ValueError(f"{expected}, got {value!r} (a bool)")
    if not isinstance(value, int):
        raise TypeError(f"{expected}, got {type(value).__name__} {value!r}")
    if not 0 <= value <= maximum:
        raise ValueError(f"{expected}, got {value}")
    return value


class SessionId(bytes):
    """The identifier of one execution run: exactly 16 raw bytes, a UUID.

    ``SessionId`` is a ``bytes`` subtype (as Django's ``SafeString`` is a
    ``str`` subtype), so it goes wherever bytes go: database drivers,
    hashing, comparison with the raw bytes the runtime holds. What it adds is
    a fixed length and a human form: ``str(sid)`` is canonical lower-case
    UUID text, the form used in URLs, the admin and JSON.

    >>> sid = SessionId.parse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0")
    >>> sid.as_bytes()[:2], str(sid)
    (b'\\x0f\\x1e', '0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0')
    """

    __slots__ = ()

    def __new__(cls, value: bytes | bytearray | memoryview) -> SessionId:
        if type(value) is cls:
            return value
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"session_id must be {SESSION_ID_LENGTH} bytes, "
                f"got {type(value).__name__}; use SessionId.parse() for UUID text"
            )
        raw = bytes(value)
        if len(raw) != SESSION_ID_LENGTH:
            raise ValueError(f"session_id must be exactly {SESSION_ID_LENGTH} bytes, got {len(raw)}")
        return super().__new__(cls, raw)

    @classmethod
    def from_bytes(cls, value: bytes | bytearray | memoryview) -> SessionId:
        """Wrap exactly 16 raw bytes, as the runtime's ``SessionId::from_bytes``."""
        return cls(value)

    @classmethod
    def from_uuid(cls, value: uuid.UUID) -> SessionId:
        """Take the 16 bytes of a ``uuid.UUID``."""
        if not isinstance(value, uuid.UUID):
            raise TypeError(f"session_id must be a uuid.UUID, got {type(value).__name__}")
        return cls(value.bytes)

    @classmethod
    def parse(cls, text: str) -> SessionId:
        """Parse canonical UUID text or 32 hex digits, in any case.

        This is the one parser for session ids in text: the URL, the JSON
        body and the admin form all use it. Surrounding whitespace, braces
        and ``urn:uuid:`` prefixes are refused: they are not what this app
        ever prints, and accepting them would give one id many spellings.
        """
        if not isinstance(text, str):
            raise TypeError(f"session_id text must be a str, got {type(text).__name__}")
        if len(text) == 36 and text[8] == text[13] == text[18] == text[23] == "-":
            # Bulk bodies parse ids by the ten thousand: one replace is half
            # the cost of five slices. A fifth dash anywhere leaves 31 digits.
            candidate = text.replace("-", "")
        else:
            candidate = text
        try:
            # fromhex takes exactly the hex digits, in either case; the
            # whitespace it would skip leaves fewer than 16 bytes.
            raw = bytes.fromhex(candidate) if len(candidate) == 32 else b""
        except ValueError:
            raw = b""
        if len(raw) != SESSION_ID_LENGTH:
            raise ValueError(
                "session_id must be a UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx) "
                f"or 32 hex digits, got {text[:64]!r}"
            )
        return bytes.__new__(cls, raw)  # raw is exactly 16 bytes: no need to check again

    @classmethod
    def new(cls) -> SessionId:
        """A fresh random UUID v4."""
        return cls(uuid.uuid4().bytes)

    def as_bytes(self) -> bytes:
        """The 16 raw bytes, as a plain ``bytes``."""
        return bytes(self)

    @property
    def uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=bytes(self))

    @property
    def hex_digits(self) -> str:
        """32 lower-case hex digits, without dashes."""
        return self.hex()

    def __str__(self) -> str:
        digits = self.hex()  # as str(uuid.UUID(bytes=self)), without building the UUID
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"

    def __repr__(self) -> str:
        return f"SessionId('{self}')"

    def __reduce__(self) -> tuple[type[SessionId], tuple[bytes]]:
        return (SessionId, (bytes(self),))


@dataclass(frozen=True, slots=True)
class SessionRecord:
    """A persisted record of a single agent execution session.

    One record is created per execution run and ties together all governance
    events within that run. Stores key it by ``session_id``. Construction
    validates every field, so a ``SessionRecord`` that exists is storable:

    - ``session_id``: a ``SessionId`` (raw 16 bytes are accepted and wrapped);
    - ``agent_id``: the agent that owns the session, ``0..2**63-1``;
    - ``started_at_ns``: wall-clock start, nanoseconds since the Unix epoch,
      ``0..2**64-1``.
    """

    session_id: SessionId
    agent_id: int
    started_at_ns: int

    # Written out rather than generated (+ ``__post_init__``): records are
    # made by the ten thousand in batch calls, and this costs 0.45 us, not 0.75.
    def __init__(self, session_id: SessionId | bytes, agent_id: int, started_at_ns: int) -> None:
        if type(session_id) is not SessionId:
            session_id = SessionId(session_id)
        # The common case inline; anything else gets check_int_range's exact error.
        if type(agent_id) is not int or not 0 <= agent_id <= AGENT_ID_MAX:
            check_int_range("agent_id", agent_id, AGENT_ID_MAX)
        if type(started_at_ns) is not int or not 0 <= started_at_ns <= STARTED_AT_NS_MAX:
            check_int_range("started_at_ns", started_at_ns, STARTED_AT_NS_MAX)
        _set_field(self, "session_id", session_id)
        _set_field(self, "agent_id", agent_id)
        _set_field(self, "started_at_ns", started_at_ns)


def parse_session_id(value: object) -> SessionId:
    """Coerce a ``SessionId``, raw bytes, a ``uuid.UUID`` or UUID/hex text.

    The one entry point for ids from outside: the admin form, the URL, the
    JSON body and ORM lookups all come through here. Raises ``ValueError``
    or ``TypeError`` with a message that says what is accepted.
    """
    if isinstance(value, str):
        return SessionId.parse(value)
    if isinstance(value, uuid.UUID):
        return SessionId.from_uuid(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return SessionId(value)
    raise TypeError(
        f"session_id must be a SessionId, 16 bytes, a uuid.UUID or UUID text, got {type(value).__name__}"
    )


def check_agent_ids(agent_ids: Iterable[object]) -> tuple[int, ...]:
    """Agent ids as a sorted tuple of distinct ones, each in 0..AGENT_ID_MAX (as ``check_int_range``).

    The scope of a store (``DjangoSessionStore.for_agents``) and the agents
    of a key (``AgentKey``) are both such a set. A string is refused
    (``TypeError``): it would iterate as characters.
    """
    if isinstance(agent_ids, (str, bytes)):
        raise TypeError("agent_ids must be an iterable of integers, not a string")
    return tuple(sorted({check_int_range("agent_ids", agent, AGENT_ID_MAX) for agent in agent_ids}))


def check_record(record: object) -> SessionRecord:
    """Return ``record`` if it is a ``SessionRecord`` (already validated), else raise ``TypeError``."""
    if not isinstance(record, SessionRecord):
        raise TypeError(f"record must be a SessionRecord, got {type(record).__name__}")
    return record
