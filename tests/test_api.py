"""The REST API: every call of the table, every status, both id forms, big integers, filters, pages."""

import pytest
from rest_framework.test import APIClient

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

SID = SessionId.parse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0")
BIG_STARTS = [0, 2**53 + 1, 2**64 - 1]


def url(session_id=None) -> str:
    return "/api/sessions/" if session_id is None else f"/api/sessions/{session_id}/"


def stored(session_id) -> tuple[int, int] | None:
    row = ExecutionSession.objects.filter(pk=session_id).values_list("agent_id", "started_at_ns").first()
    return row


def put(api, target, agent_id=42, started_at_ns="1764067200123456789", **extra):
    return api.put(
        url(target), {"agent_id": agent_id, "started_at_ns": started_at_ns, **extra}, format="json"
    )


# -- representation ----------------------------------------------------------


@pytest.mark.parametrize("agent_id", [2**53 + 1, 2**63 - 1])
def test_agent_ids_past_2_53_round_trip_exactly_as_strings_or_integers(api, agent_id):
    for sent in (agent_id, str(agent_id)):
        assert put(api, SID, agent_id=sent).status_code in (200, 201)
        assert api.get(url(SID)).json()["agent_id"] == str(agent_id)
        assert stored(SID)[0] == agent_id


def test_a_record_reads_as_documented(api):
    put(api, SID)
    response = api.get(url(SID))
    assert response.status_code == 200
    assert response.json() == {
        "session_id": "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0",
        "agent_id": "42",  # a decimal string, as started_at_ns: JavaScript rounds big JSON numbers
        "started_at_ns": "1764067200123456789",
        "started_at": "2025-11-25T10:40:00.123456Z",
    }


@pytest.mark.parametrize("start", BIG_STARTS)
@pytest.mark.parametrize("as_string", [True, False])
def test_started_at_ns_accepts_strings_and_integers_and_reads_back_exact(api, start, as_string):
    response = put(api, SID, started_at_ns=str(start) if as_string else start)
    assert response.status_code == 201, response.json()
    assert response.json()["started_at_ns"] == str(start)
    assert api.get(url(SID)).json()["started_at_ns"] == str(start)
    assert stored(SID) == (42, start)


@pytest.mark.parametrize("form", [str(SID), SID.hex(), str(SID).upper(), SID.hex().upper()])
def test_both_id_forms_address_the_same_session(api, form):
    put(api, SID)
    response = api.get(url(form))
    assert response.status_code == 200
    assert response.json()["session_id"] == str(SID)


# -- GET one ------------------------------------------------------------------


def test_get_absent_is_404(api):
    assert api.get(url(SessionId.new())).status_code == 404


@pytest.mark.parametrize(
    "bad", ["nope", "0f1e2d3c", str(SID) + "0", "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0fg", "%00"]
)
def test_malformed_id_in_the_url_is_404(api, bad):
    assert api.get(url(bad)).status_code == 404
    assert api.put(url(bad), {"agent_id": 1, "started_at_ns": 1}, format="json").status_code == 404
    assert api.patch(url(bad), {"agent_id": 1}, format="json").status_code == 404


# -- POST ---------------------------------------------------------------------


def test_post_creates_with_a_generated_id(api):
    response = api.post(url(), {"agent_id": 7, "started_at_ns": "5"}, format="json")
    assert response.status_code == 201
    created = SessionId.parse(response.json()["session_id"])
    assert created.uuid.version == 4
    assert stored(created) == (7, 5)


def test_post_with_an_id_in_hex_creates_it(api):
    response = api.post(url(), {"session_id": SID.hex(), "agent_id": 7, "started_at_ns": 5}, format="json")
    assert response.status_code == 201
    assert response.json()["session_id"] == str(SID)


def test_post_of_an_existing_id_is_409_and_keeps_the_stored_record(api):
    put(api, SID, agent_id=1, started_at_ns=1)
    response = api.post(url(), {"session_id": str(SID), "agent_id": 2, "started_at_ns": 2}, format="json")
    assert response.status_code == 409
    assert "detail" in response.json()
    assert stored(SID) == (1, 1)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent_id": -1, "started_at_ns": 1}, "agent_id"),
        ({"agent_id": 2**63, "started_at_ns": 1}, "agent_id"),
        ({"agent_id": True, "started_at_ns": 1}, "agent_id"),
        ({"agent_id": 1.5, "started_at_ns": 1}, "agent_id"),
        ({"agent_id": "x", "started_at_ns": 1}, "agent_id"),
        ({"agent_id": None, "started_at_ns": 1}, "agent_id"),
        ({"started_at_ns": 1}, "agent_id"),
        ({"agent_id": 1, "started_at_ns": -1}, "started_at_ns"),
        ({"agent_id": 1, "started_at_ns": str(2**64)}, "started_at_ns"),
        ({"agent_id": 1, "started_at_ns": 2**64}, "started_at_ns"),
        ({"agent_id": 1, "started_at_ns": "1e9"}, "started_at_ns"),
        ({"agent_id": 1, "started_at_ns": " 1"}, "started_at_ns"),
        ({"agent_id": 1, "started_at_ns": 1.0}, "started_at_ns"),
        ({"agent_id": 1}, "started_at_ns"),
        ({"session_id": "nope", "agent_id": 1, "started_at_ns": 1}, "session_id"),
        ({"session_id": 5, "agent_id": 1, "started_at_ns": 1}, "session_id"),
    ],
)
def test_post_with_a_bad_field_is_400_naming_it_and_writes_nothing(api, body, field):
    response = api.post(url(), body, format="json")
    assert response.status_code == 400
    assert field in response.json()
    assert ExecutionSession.objects.count() == 0


def test_malformed_json_is_400(api):
    response = api.post(url(), b'{"agent_id": ', content_type="application/json")
    assert response.status_code == 400


# -- PUT ----------------------------------------------------------------------


def test_put_creates_then_replaces(api):
    first = put(api, SID, agent_id=1, started_at_ns=1)
    assert first.status_code == 201
    second = put(api, SID.hex(), agent_id=2, started_at_ns=str(2**64 - 1))
    assert second.status_code == 200
    assert second.json()["agent_id"] == "2"
    assert stored(SID) == (2, 2**64 - 1)
    assert ExecutionSession.objects.count() == 1


def test_put_accepts_a_body_id_equal_to_the_url_in_either_form(api):
    assert put(api, SID, session_id=SID.hex()).status_code == 201
    assert put(api, SID, session_id=str(SID)).status_code == 200


def test_put_with_a_different_body_id_is_400_and_writes_nothing(api):
    response = put(api, SID, session_id=str(SessionId.new()))
    assert response.status_code == 400
    assert "session_id" in response.json()
    assert ExecutionSession.objects.count() == 0


def test_put_with_a_bad_field_is_400_and_keeps_the_stored_record(api):
    put(api, SID, agent_id=1, started_at_ns=1)
    response = put(api, SID, agent_id=-5)
    assert response.status_code == 400
    assert "agent_id" in response.json()
    assert stored(SID) == (1, 1)


# -- PATCH --------------------------------------------------------------------


def test_patch_changes_only_the_given_field(api):
    put(api, SID, agent_id=1, started_at_ns=1)
    response = api.patch(url(SID), {"started_at_ns": str(2**64 - 1)}, format="json")
    assert response.status_code == 200
    assert response.json()["started_at_ns"] == str(2**64 - 1)
    assert stored(SID) == (1, 2**64 - 1)
    assert api.patch(url(SID.hex()), {"agent_id": 9}, format="json").json()["agent_id"] == "9"
    assert stored(SID) == (9, 2**64 - 1)


def test_patch_of_an_absent_session_is_404_and_creates_nothing(api):
    assert api.patch(url(SID), {"agent_id": 9}, format="json").status_code == 404
    assert ExecutionSession.objects.count() == 0


def test_patch_with_a_bad_value_is_400_and_keeps_the_record(api):
    put(api, SID, agent_id=1, started_at_ns=1)
    response = api.patch(url(SID), {"started_at_ns": "-3"}, format="json")
    assert response.status_code == 400
    assert "started_at_ns" in response.json()
    assert stored(SID) == (1, 1)


def test_patch_with_a_different_body_id_is_400(api):
    put(api, SID)
    assert api.patch(url(SID), {"session_id": str(SessionId.new())}, format="json").status_code == 400


# -- DELETE -------------------------------------------------------------------


def test_delete_is_204_both_times(api):
    put(api, SID)
    assert api.delete(url(SID)).status_code == 204
    assert stored(SID) is None
    assert api.delete(url(SID.hex())).status_code == 204


@pytest.mark.parametrize("method", ["get", "put", "patch", "delete"])
def test_a_malformed_id_in_the_url_is_404_for_every_method(api, method):
    put(api, SID)
    response = getattr(api, method)(url("not-an-id"), {"agent_id": 1, "started_at_ns": "1"}, format="json")
    assert response.status_code == 404
    assert set(response.json()) == {"detail"}
    assert stored(SID) is not None  # nothing else was touched


# -- list, filters, pages --------------------------------------------------------


def seed(count: int, agent_of=lambda n: n % 3, start_of=lambda n: n * 10) -> list[SessionId]:
    ids = [SessionId.new() for _ in range(count)]
    ExecutionSession.objects.bulk_create(
        ExecutionSession(session_id=sid, agent_id=agent_of(n), started_at_ns=start_of(n))
        for n, sid in enumerate(ids)
    )
    return ids


def test_list_is_newest_first(api):
    ExecutionSession.objects.bulk_create(
        ExecutionSession(session_id=SessionId.new(), agent_id=1, started_at_ns=start)
        for start in [5, 2**64 - 1, 0, 2**63, 2**63 - 1]
    )
    starts = [int(item["started_at_ns"]) for item in api.get(url()).json()["results"]]
    assert starts == [2**64 - 1, 2**63, 2**63 - 1, 5, 0]


def test_list_filters_by_agent_and_start_bounds(api):
    seed(30)
    by_agent = api.get(url(), {"agent_id": 1}).json()["results"]
    assert {item["agent_id"] for item in by_agent} == {"1"}
    assert len(by_agent) == 10
    window = api.get(url(), {"started_after_ns": 50, "started_before_ns": 100}).json()["results"]
    assert sorted(int(item["started_at_ns"]) for item in window) == [60, 70, 80, 90]
    both = api.get(url(), {"agent_id": 0, "started_after_ns": 200}).json()["results"]
    assert sorted(int(item["started_at_ns"]) for item in both) == [210, 240, 270]


def test_start_filters_work_across_two_to_the_63(api):
    seed(4, start_of=lambda n: [2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1][n])
    after = api.get(url(), {"started_after_ns": str(2**63)}).json()["results"]
    assert [int(item["started_at_ns"]) for item in after] == [2**64 - 1, 2**63 + 1]
    before = api.get(url(), {"started_before_ns": str(2**63)}).json()["results"]
    assert [int(item["started_at_ns"]) for item in before] == [2**63 - 1]


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("agent_id", "-1"),
        ("agent_id", "abc"),
        ("agent_id", str(2**63)),
        ("started_after_ns", str(2**64)),
        ("started_before_ns", "-1"),
        ("started_before_ns", "soon"),
    ],
)
def test_bad_filter_values_are_400_naming_the_parameter(api, param, value):
    response = api.get(url(), {param: value})
    assert response.status_code == 400
    assert param in response.json()


def test_cursor_pages_cover_everything_once_even_with_inserts_between_pages(api):
    ids = seed(25, start_of=lambda n: 1000 + n)
    seen: list[str] = []
    page = api.get(url(), {"page_size": 10}).json()
    seen += [item["session_id"] for item in page["results"]]
    # Newer sessions arrive while the client pages: they must not shift the pages.
    seed(5, start_of=lambda n: 10_000 + n)
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [item["session_id"] for item in page["results"]]
    assert len(seen) == len(set(seen)) == 25
    assert set(seen) == {str(sid) for sid in ids}


def test_pages_with_equal_start_times_neither_repeat_nor_skip(api):
    ids = seed(23, start_of=lambda n: 7)
    seen: list[str] = []
    page = api.get(url(), {"page_size": 5}).json()
    seen += [item["session_id"] for item in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [item["session_id"] for item in page["results"]]
    assert sorted(seen) == sorted(str(sid) for sid in ids)


# -- who may call --------------------------------------------------------------


def anonymous_calls():
    return [
        ("get", url(), None),
        ("get", url(SID), None),
        ("post", url(), {"agent_id": 1, "started_at_ns": 1}),
        ("put", url(SID), {"agent_id": 1, "started_at_ns": 1}),
        ("patch", url(SID), {"agent_id": 1}),
        ("delete", url(SID), None),
    ]


@pytest.mark.parametrize(("method", "path", "body"), anonymous_calls())
def test_anonymous_requests_are_401_with_a_token_challenge(method, path, body):
    response = getattr(APIClient(), method)(path, body, format="json")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"


# allowed: the status a permitted call gets, and the stored (agent, start) of SID after it.
PERMISSION_CASES = [
    ("get", url(), None, {"view"}, (200, (3, 3))),
    ("get", url(SID), None, {"view"}, (200, (3, 3))),
    ("post", url(), {"agent_id": 1, "started_at_ns": 1}, {"add"}, (201, (3, 3))),
    ("put", url(SID), {"agent_id": 1, "started_at_ns": 1}, {"add", "change"}, (200, (1, 1))),
    ("patch", url(SID), {"agent_id": 1}, {"change"}, (200, (1, 3))),
    ("delete", url(SID), None, {"delete"}, (204, None)),
]
HOLDINGS = [
    (),
    ("view",),
    ("add",),
    ("change",),
    ("delete",),
    ("add", "change"),
    ("view", "add", "change", "delete"),
]


@pytest.mark.parametrize(("method", "path", "body", "needs", "allowed"), PERMISSION_CASES)
@pytest.mark.parametrize("holds", HOLDINGS)
def test_each_call_needs_its_model_permission(make_user, method, path, body, needs, allowed, holds):
    ExecutionSession.objects.create(session_id=SID, agent_id=3, started_at_ns=3)
    client = APIClient()
    client.force_authenticate(make_user(*holds))
    response = getattr(client, method)(path, body, format="json")
    if needs <= set(holds):
        status, after = allowed
        assert response.status_code == status
        assert stored(SID) == after  # the call did what it says, and only that
        if method == "post":
            assert stored(response.json()["session_id"]) == (1, 1)
    else:
        assert response.status_code == 403
        assert stored(SID) == (3, 3)


def test_session_login_works_too(make_user, client):
    make_user("view", username="viewer")
    assert client.login(username="viewer", password="pw-Secret-123")
    assert client.get(url()).status_code == 200


# -- schema -----------------------------------------------------------------------


def test_schema_and_docs(api):
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    component = schema["components"]["schemas"]["ExecutionSession"]["properties"]
    assert component["session_id"]["format"] == "uuid"
    assert component["started_at_ns"]["type"] == "string"
    assert component["started_at_ns"]["pattern"].startswith("^([0-9]{1,19}|")
    operations = schema["paths"]["/api/sessions/"]
    assert "409" in operations["post"]["responses"]
    assert "204" in schema["paths"]["/api/sessions/{session_id}/"]["delete"]["responses"]
    assert {"200", "201"} <= set(schema["paths"]["/api/sessions/{session_id}/"]["put"]["responses"])
    assert api.get("/api/schema/").status_code == 200
    docs = api.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


def test_the_schema_lists_request_bodies_as_json_only_and_the_form_still_works(api):
    """One content type per body (openapi-python-client breaks on two); forms still parse."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    bodies = {
        (method, path): list(operation["requestBody"]["content"])
        for path, operations in schema["paths"].items()
        for method, operation in operations.items()
        if "requestBody" in operation
    }
    assert {("post", "/api/sessions/"), ("put", "/api/sessions/{session_id}/")} <= bodies.keys()
    assert all(types == ["application/json"] for types in bodies.values()), bodies
    # The browsable API's form (urlencoded) is still accepted.
    from urllib.parse import urlencode

    form = urlencode({"agent_id": "7", "started_at_ns": str(2**64 - 1)})
    response = api.post(url(), form, content_type="application/x-www-form-urlencoded")
    assert response.status_code == 201, response.content
    assert response.json()["started_at_ns"] == str(2**64 - 1)


def test_schema_generates_without_warnings():
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", "/dev/null")
