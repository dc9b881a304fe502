"""Hostile and malformed requests get a 4xx, never a 500, and write nothing."""

import pytest

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

SID = SessionId.new()
URLS = ["/api/sessions/", f"/api/sessions/{SID}/"]


def send(api, method, path, body: bytes, content_type: str):
    return getattr(api, method)(path, body, content_type=content_type)


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", URLS[0]), ("put", URLS[1]), ("patch", URLS[1])],
    ids=["post-list", "put-detail", "patch-detail"],  # the same on every pytest-xdist worker
)
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
    ("path", "status"),
    [
        ("/api/sessions/%ff%fe/", 404),  # not an id
        ("/api/sessions/" + "a" * 5000 + "/", 404),
        ("/api/sessions/..%2f..%2fadmin/", 404),
        ("/api/sessions/?agent_id=%00", 400),  # not an integer: the filter names it
        ("/api/sessions/?started_after_ns=" + "9" * 5000, 400),  # out of range
        ("/api/sessions/?cursor=garbage", 404),  # DRF's answer to a cursor it never gave out
        ("/api/sessions/?page_size=-5", 400),  # not a page size: refused, as the schema says
        ("/api/sessions/?page_size=null", 400),
        ("/api/sessions/?page_size=99999999999999999999999", 200),  # capped at MAX_PAGE_SIZE
    ],
)
def test_odd_urls_get_the_documented_answer_as_json(api, path, status):
    response = api.get(path)
    assert response.status_code == status, (response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json")
    if status == 400:
        assert set(response.json()) & {"agent_id", "started_after_ns", "page_size"}  # names the field
