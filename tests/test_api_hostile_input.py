"""Hostile and malformed requests get a 4xx, never a 500, and write nothing."""

import pytest

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

SID = SessionId.new()
URLS = ["/api/sessions/", f"/api/sessions/{SID}/"]


def send(api, method, path, body: bytes, content_type: str):
    return getattr(api, method)(path, body, content_type=content_type)


@pytest.mark.parametrize(("method", "path"), [("post", URLS[0]), ("put", URLS[1]), ("patch", URLS[1])])
@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"agent_id": 1, "started_at_ns": "1"' + b" " * (3 * 1024 * 1024) + b"}", "application/json"),
        (b"agent_id=1&started_at_ns=1", "text/plain"),
        (b"<session/>", "application/xml"),
        (b'{"agent_id": "\xff\xfe", "started_at_ns": "1"}', "application/json"),
        (b"\xff\xfe\xfd", "application/json"),
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
        (b"", "application/json"),
        (b"null", "application/json"),
        (b"[]", "application/json"),
        (b'"text"', "application/json"),
        (b'{"agent_id": 1e400, "started_at_ns": NaN}', "application/json"),
        (b'{"agent_id": {"$gt": 1}, "started_at_ns": ["1"]}', "application/json"),
        (
            b'{"agent_id": 1, "started_at_ns": "1", "session_id": "' + b"a" * 100_000 + b'"}',
            "application/json",
        ),
    ],
    ids=[
        "oversized",
        "text-plain",
        "xml",
        "non-utf8-string",
        "non-utf8-body",
        "deep-arrays",
        "deep-objects",
        "empty",
        "null",
        "array",
        "string",
        "huge-number-nan",
        "objects-for-scalars",
        "long-id",
    ],
)
def test_answer_is_4xx_and_nothing_is_written(api, method, path, body, content_type):
    response = send(api, method, path, body, content_type)
    assert 400 <= response.status_code < 500, (response.status_code, response.content[:300])
    assert ExecutionSession.objects.count() == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/sessions/%ff%fe/",
        "/api/sessions/" + "a" * 5000 + "/",
        "/api/sessions/..%2f..%2fadmin/",
        "/api/sessions/?agent_id=%00",
        "/api/sessions/?started_after_ns=" + "9" * 5000,
        "/api/sessions/?cursor=garbage",
        "/api/sessions/?page_size=-5",
        "/api/sessions/?page_size=99999999999999999999999",
    ],
)
def test_odd_urls_are_answered_without_a_server_error(api, path):
    response = api.get(path)
    assert response.status_code < 500, (response.status_code, response.content[:300])
