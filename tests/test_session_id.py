"""``SessionId``: 16 raw bytes with a UUID face."""

import pickle
import uuid

import pytest

from sessions_app.storage import SessionId

CANONICAL = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"
RAW = bytes.fromhex("0f1e2d3c4b5a49788695a4b3c2d1e0f0")


def test_wraps_exactly_sixteen_bytes_and_returns_them():
    sid = SessionId(RAW)
    assert sid.as_bytes() == RAW
    assert type(sid.as_bytes()) is bytes
    assert SessionId.from_bytes(RAW) == sid


@pytest.mark.parametrize("length", [0, 1, 15, 17, 32])
def test_rejects_wrong_length_saying_what_was_expected(length):
    with pytest.raises(ValueError, match=f"exactly 16 bytes, got {length}"):
        SessionId(b"\x01" * length)


@pytest.mark.parametrize("value", [CANONICAL, 16, None, 1.5, [0] * 16, uuid.UUID(CANONICAL)])
def test_rejects_non_bytes(value):
    with pytest.raises(TypeError, match="session_id must be 16 bytes"):
        SessionId(value)


def test_str_is_canonical_lowercase_uuid_text():
    assert str(SessionId(RAW)) == CANONICAL
    assert f"{SessionId(RAW)}" == CANONICAL


@pytest.mark.parametrize(
    "text", [CANONICAL, CANONICAL.upper(), CANONICAL.replace("-", ""), CANONICAL.replace("-", "").upper()]
)
def test_parse_accepts_uuid_text_and_32_hex_digits_in_any_case(text):
    assert SessionId.parse(text) == RAW


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not-a-uuid",
        CANONICAL[:-1],
        CANONICAL + "0",
        "{" + CANONICAL + "}",
        "urn:uuid:" + CANONICAL,
        " " + CANONICAL,
        CANONICAL.replace("-", "")[:-1] + "g",
        "0f1e2d3c4b5a-4978-8695-a4b3c2d1e0f0-",
        "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f\u0660",  # an Arabic-Indic digit zero
        "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0-0",  # the four dashes in place and a fifth
        "0f1e2d3c-4b5a-4978-8695-a4b3c2d1 e0f",  # whitespace, which bytes.fromhex would skip
        "0f1e2d3c4b5a4978 8695a4b3c2d1e0f",  # 32 characters, one of them a space
    ],
)
def test_parse_rejects_other_text_with_a_message(text):
    with pytest.raises(ValueError, match="must be a UUID"):
        SessionId.parse(text)


def test_parse_rejects_bytes():
    with pytest.raises(TypeError):
        SessionId.parse(RAW)


def test_uuid_round_trip():
    u = uuid.UUID(CANONICAL)
    assert SessionId.from_uuid(u).uuid == u
    with pytest.raises(TypeError):
        SessionId.from_uuid(CANONICAL)


def test_new_makes_distinct_random_uuid4s():
    ids = {SessionId.new() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(sid.uuid.version == 4 for sid in ids)


def test_is_immutable_and_hashable_by_value():
    sid = SessionId(RAW)
    assert {sid: 1}[SessionId(bytearray(RAW))] == 1
    with pytest.raises(AttributeError):
        sid.extra = 1


def test_every_byte_value_survives_including_nul_and_ff():
    for raw in (b"\x00" * 16, b"\xff" * 16, bytes(range(16)), bytes(range(240, 256))):
        assert SessionId(raw).as_bytes() == raw
        assert SessionId.parse(str(SessionId(raw))) == raw


def test_pickles_as_a_session_id():
    sid = SessionId(RAW)
    clone = pickle.loads(pickle.dumps(sid))
    assert type(clone) is SessionId
    assert clone == sid
