"""``SessionRecord``: a frozen value validated at construction."""

import dataclasses

import pytest

from sessions_app.storage import SessionId, SessionRecord

SID = SessionId(b"\x07" * 16)


def test_equal_by_value_and_frozen():
    assert SessionRecord(SID, 1, 2) == SessionRecord(SessionId(b"\x07" * 16), 1, 2)
    assert SessionRecord(SID, 1, 2) != SessionRecord(SID, 1, 3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        SessionRecord(SID, 1, 2).agent_id = 5


def test_wraps_raw_bytes_as_session_id():
    record = SessionRecord(b"\x07" * 16, 1, 2)
    assert type(record.session_id) is SessionId


@pytest.mark.parametrize("agent_id", [0, 1, 2**63 - 1])
@pytest.mark.parametrize("started_at_ns", [0, 2**63 - 1, 2**63, 2**64 - 1])
def test_accepts_the_whole_range(agent_id, started_at_ns):
    record = SessionRecord(SID, agent_id, started_at_ns)
    assert (record.agent_id, record.started_at_ns) == (agent_id, started_at_ns)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("agent_id", -1, r"agent_id must be an integer in 0\.\.9223372036854775807, got -1"),
        (
            "agent_id",
            2**63,
            r"agent_id must be an integer in 0\.\.9223372036854775807, got 9223372036854775808",
        ),
        ("started_at_ns", -1, r"started_at_ns must be an integer in 0\.\.18446744073709551615, got -1"),
        ("started_at_ns", 2**64, r"started_at_ns must be an integer in 0\.\.18446744073709551615"),
        ("agent_id", True, r"agent_id must be an integer .* \(a bool\)"),
        ("started_at_ns", False, r"started_at_ns must be an integer .* \(a bool\)"),
    ],
)
def test_out_of_range_or_bool_is_a_value_error_naming_the_field(field, value, message):
    fields = {"session_id": SID, "agent_id": 1, "started_at_ns": 1, field: value}
    with pytest.raises(ValueError, match=message):
        SessionRecord(**fields)


@pytest.mark.parametrize("field", ["agent_id", "started_at_ns"])
@pytest.mark.parametrize("value", ["1", 1.0, None, b"1"])
def test_non_integers_are_a_type_error_naming_the_field(field, value):
    fields = {"session_id": SID, "agent_id": 1, "started_at_ns": 1, field: value}
    with pytest.raises(TypeError, match=f"{field} must be an integer"):
        SessionRecord(**fields)


@pytest.mark.parametrize("session_id", [b"\x00" * 15, b"\x00" * 17])
def test_wrong_length_id_is_a_value_error(session_id):
    with pytest.raises(ValueError, match="session_id must be exactly 16 bytes"):
        SessionRecord(session_id, 1, 1)


def test_text_id_is_a_type_error():
    with pytest.raises(TypeError, match="session_id"):
        SessionRecord(str(SID), 1, 1)
