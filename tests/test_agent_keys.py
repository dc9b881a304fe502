"""Agent keys through a real uvicorn server: who may do what, and what is stored afterwards.

The matrix: every endpoint x {the key's own agent's session, another
agent's session, an absent id} x {every scope, each scope missing} and
{expired, revoked, unknown key}; each answer's status and body, and the
stored rows after it. Then a hypothesis test drives random calls by two
keys over shared ids against a model of what each key may do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sessions_app.client import HttpSessionStore
from sessions_app.models import AgentKey, ExecutionSession
from sessions_app.storage import (
    BackendError,
    NotFound,
    SessionId,
    SessionRecord,
    assert_session_store_conformance,
)
from sessions_app.storage.types import AGENT_ID_MAX

from .servers import subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

OWN, OTHER = 42, 7
ALL_SCOPES = ("read", "write", "delete")


@pytest.fixture(scope="module")
def base(django_db_setup, django_db_blocker) -> Iterator[str]:
    """uvicorn serving the project on the test database."""
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    # Every call comes from 127.0.0.1: the refused keys of the matrix must not get it throttled.
    with uvicorn_server(
        url, env={"SESSIONS_MAX_BULK": "50", "SESSIONS_AUTH_FAILURE_RATE": "100000/min"}
    ) as served:
        yield served


@pytest.fixture
def http(base) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base, timeout=10) as client:
        yield client


def new_key(agents=(OWN,), scopes=ALL_SCOPES, **extra) -> str:
    _, key = AgentKey.objects.create_key(name="test", agent_ids=list(agents), scopes=list(scopes), **extra)
    return key


def with_key(key: str) -> dict[str, str]:
    return {"Authorization": f"Api-Key {key}"}


def stored() -> dict[str, tuple[int, int]]:
    return {str(row.session_id): (row.agent_id, row.started_at_ns) for row in ExecutionSession.objects.all()}


# -- the matrix ----------------------------------------------------------------------

# What each key kind holds: scopes, or the reason every call is refused with 401.
KEY_KINDS = {
    "every scope": ALL_SCOPES,
    "no read": ("write", "delete"),
    "no write": ("read", "delete"),
    "no delete": ("read", "write"),
    "expired": "401",
    "revoked": "401",
    "unknown": "401",
}
TARGETS = ("own", "other", "absent")

# endpoint -> the scope it needs
ENDPOINTS = {
    "GET detail": "read",
    "PUT detail": "write",
    "PATCH detail": "write",
    "DELETE detail": "delete",
    "POST collection": "write",
    "GET list": "read",
    "bulk-save": "write",
    "bulk-load": "read",
    "bulk-delete": "delete",
}


def key_of(kind: str) -> str:
    if kind == "expired":
        return new_key(expiry_date=timezone.now() - timedelta(seconds=1))
    if kind == "revoked":
        return new_key(revoked=True)
    if kind == "unknown":
        return new_key()[:-4] + "0000"  # a real prefix, a wrong secret
    return new_key(scopes=KEY_KINDS[kind])


def call(http: httpx.Client, endpoint: str, key: str, session_id: str) -> httpx.Response:
    """The endpoint's call aimed at ``session_id``, each write for the key's own agent."""
    headers = with_key(key)
    detail = f"/api/sessions/{session_id}/"
    own_record = {"session_id": session_id, "agent_id": OWN, "started_at_ns": 99}
    if endpoint == "GET detail":
        return http.get(detail, headers=headers)
    if endpoint == "PUT detail":
        return http.put(detail, json={"agent_id": OWN, "started_at_ns": 99}, headers=headers)
    if endpoint == "PATCH detail":
        return http.patch(detail, json={"started_at_ns": 99}, headers=headers)
    if endpoint == "DELETE detail":
        return http.delete(detail, headers=headers)
    if endpoint == "POST collection":
        return http.post("/api/sessions/", json=own_record, headers=headers)
    if endpoint == "GET list":
        return http.get("/api/sessions/", headers=headers)
    if endpoint == "bulk-save":
        return http.post("/api/sessions/bulk-save/", json={"sessions": [own_record]}, headers=headers)
    ids = {"session_ids": [session_id]}
    if endpoint == "bulk-load":
        return http.post("/api/sessions/bulk-load/", json=ids, headers=headers)
    return http.post("/api/sessions/bulk-delete/", json=ids, headers=headers)


def expected(endpoint: str, target: str, ids: dict[str, str], before: dict) -> tuple[int, dict, object]:
    """(status, the rows afterwards, a check of the body) for a key that holds the needed scope."""
    session_id = ids[target]
    written = {**before, session_id: (OWN, 99)}
    gone = {sid: row for sid, row in before.items() if sid != session_id}
    own_json = {"session_id": ids["own"], "agent_id": str(OWN), "started_at_ns": "1"}
    table = {
        "GET detail": {
            "own": (200, before, lambda body: body == {**own_json, "started_at": body["started_at"]}),
            "other": (404, before, None),
            "absent": (404, before, None),
        },
        "PUT detail": {
            "own": (200, written, None),
            "other": (403, before, lambda body: "session_id" in body),
            "absent": (201, written, None),
        },
        "PATCH detail": {
            "own": (200, written, None),
            "other": (404, before, None),
            "absent": (404, before, None),
        },
        "DELETE detail": {
            "own": (204, gone, None),
            "other": (204, before, None),
            "absent": (204, before, None),
        },
        "POST collection": {
            "own": (409, before, None),
            "other": (409, before, None),
            "absent": (201, written, None),
        },
        "GET list": {
            target: (200, before, lambda body: [r["session_id"] for r in body["results"]] == [ids["own"]])
            for target in TARGETS
        },
        "bulk-save": {
            "own": (200, written, lambda body: body == {"saved": 1}),
            "other": (
                403,
                before,
                lambda body: body == {"sessions": {"0": {"session_id": body["sessions"]["0"]["session_id"]}}},
            ),
            "absent": (200, written, lambda body: body == {"saved": 1}),
        },
        "bulk-load": {
            "own": (200, before, lambda body: [r["session_id"] for r in body["sessions"]] == [ids["own"]]),
            "other": (200, before, lambda body: body == {"sessions": []}),
            "absent": (200, before, lambda body: body == {"sessions": []}),
        },
        "bulk-delete": {
            "own": (200, gone, lambda body: body == {"deleted": 1}),
            "other": (200, before, lambda body: body == {"deleted": 0}),
            "absent": (200, before, lambda body: body == {"deleted": 0}),
        },
    }
    return table[endpoint][target]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_every_key_kind_on_every_target(http, endpoint):
    failures = []
    for kind, holds in KEY_KINDS.items():
        key = key_of(kind)
        for target in TARGETS:
            ExecutionSession.objects.all().delete()
            ids = {name: str(uuid.uuid4()) for name in TARGETS}
            ExecutionSession.objects.create(
                session_id=SessionId.parse(ids["own"]), agent_id=OWN, started_at_ns=1
            )
            ExecutionSession.objects.create(
                session_id=SessionId.parse(ids["other"]), agent_id=OTHER, started_at_ns=1
            )
            before = stored()
            answer = call(http, endpoint, key, ids[target])
            if holds == "401":
                want_status, want_rows, check = 401, before, lambda body: "detail" in body
            elif ENDPOINTS[endpoint] not in holds:
                want_status, want_rows, check = 403, before, lambda body: "detail" in body
            else:
                want_status, want_rows, check = expected(endpoint, target, ids, before)
            body = answer.json() if answer.content else None
            if answer.status_code != want_status or stored() != want_rows or (check and not check(body)):
                failures.append((kind, target, answer.status_code, want_status, body))
    assert failures == []


def test_writes_for_another_agent_are_refused_and_write_nothing(http):
    key = new_key()
    own_id = str(uuid.uuid4())
    ExecutionSession.objects.create(session_id=SessionId.parse(own_id), agent_id=OWN, started_at_ns=1)
    fresh = str(uuid.uuid4())
    before = stored()
    answers = [
        http.put(
            f"/api/sessions/{fresh}/", json={"agent_id": OTHER, "started_at_ns": 1}, headers=with_key(key)
        ),
        http.post(
            "/api/sessions/",
            json={"session_id": fresh, "agent_id": OTHER, "started_at_ns": 1},
            headers=with_key(key),
        ),
        http.patch(f"/api/sessions/{own_id}/", json={"agent_id": OTHER}, headers=with_key(key)),
    ]
    for answer in answers:
        assert answer.status_code == 403
        assert answer.json() == {"agent_id": [f"This key may not act for agent {OTHER}."]}
    bulk = http.post(
        "/api/sessions/bulk-save/",
        json={
            "sessions": [
                {"session_id": fresh, "agent_id": OWN, "started_at_ns": 1},
                {"session_id": str(uuid.uuid4()), "agent_id": OTHER, "started_at_ns": 1},
            ]
        },
        headers=with_key(key),
    )
    assert bulk.status_code == 403
    assert bulk.json() == {"sessions": {"1": {"agent_id": [f"This key may not act for agent {OTHER}."]}}}
    assert stored() == before


def test_a_patch_of_another_agents_session_is_404_whatever_the_body(http):
    key = new_key()
    theirs = str(uuid.uuid4())
    ExecutionSession.objects.create(session_id=SessionId.parse(theirs), agent_id=OTHER, started_at_ns=1)
    for body in ({"agent_id": OWN}, {"agent_id": OTHER}, {"started_at_ns": -1}, {}):
        assert http.patch(f"/api/sessions/{theirs}/", json=body, headers=with_key(key)).status_code == 404
    assert stored() == {theirs: (OTHER, 1)}


def test_the_list_and_its_filter_show_only_the_keys_agents(http):
    key = new_key(agents=(OWN, OWN + 1))
    for agent in (OWN, OWN + 1, OTHER):
        ExecutionSession.objects.create(agent_id=agent, started_at_ns=agent)
    listed = http.get("/api/sessions/", headers=with_key(key)).json()["results"]
    assert sorted(int(row["agent_id"]) for row in listed) == [OWN, OWN + 1]
    other = http.get(f"/api/sessions/?agent_id={OTHER}", headers=with_key(key))
    assert (other.status_code, other.json()["results"]) == (200, [])


def test_a_key_with_several_agents_acts_for_each(http):
    key = new_key(agents=(OWN, OTHER))
    sid = str(uuid.uuid4())
    assert (
        http.put(
            f"/api/sessions/{sid}/", json={"agent_id": OWN, "started_at_ns": 1}, headers=with_key(key)
        ).status_code
        == 201
    )
    assert (
        http.patch(f"/api/sessions/{sid}/", json={"agent_id": OTHER}, headers=with_key(key)).status_code
        == 200
    )
    assert stored() == {sid: (OTHER, 1)}


def test_expired_revoked_and_unknown_keys_say_why(http):
    expired = new_key(expiry_date=timezone.now() - timedelta(seconds=1))
    revoked = new_key(revoked=True)
    for key, detail in (
        (expired, "API key has expired."),
        (revoked, "Invalid API key."),
        ("nosuchpf.secret", "Invalid API key."),
        ("no-dot-at-all", "Invalid API key."),
    ):
        answer = http.get("/api/sessions/", headers=with_key(key))
        assert (answer.status_code, answer.json()) == (401, {"detail": detail})
        assert answer.headers["WWW-Authenticate"] == "Token"  # the first authentication class's challenge


def test_a_key_never_opens_the_metrics_or_the_admin(http):
    key = new_key()
    assert http.get("/api/metrics/", headers=with_key(key)).status_code == 403
    admin = http.get("/admin/", headers=with_key(key))
    assert admin.status_code == 302 and admin.headers["Location"].startswith("/admin/login/")


def test_a_key_records_when_it_was_last_used(http):
    key = new_key()
    prefix = key.partition(".")[0]
    assert AgentKey.objects.get(prefix=prefix).last_used is None
    assert http.get("/api/sessions/", headers=with_key(key)).status_code == 200
    assert AgentKey.objects.get(prefix=prefix).last_used is not None


# -- the client --------------------------------------------------------------------------


async def test_the_client_with_an_agent_key_meets_the_contract_for_its_agents(base):
    from asgiref.sync import sync_to_async

    key = await sync_to_async(new_key)(agents=(OWN, AGENT_ID_MAX - OWN))
    async with HttpSessionStore(f"{base}/api/sessions/", api_key=key) as store:
        await assert_session_store_conformance(store, SessionRecord(SessionId.new(), OWN, 5))
        with pytest.raises(BackendError, match="403"):
            await store.save(SessionRecord(SessionId.new(), OTHER, 5))
        with pytest.raises(NotFound):
            await store.load(SessionId.new())


def test_the_client_takes_a_token_or_a_key_not_both():
    with pytest.raises(ValueError, match="not both"):
        HttpSessionStore("http://127.0.0.1:9/api/sessions/", token="t", api_key="k")


# -- two keys at random, against a model ----------------------------------------------------

KEY_AGENTS = {"a": (1,), "b": (2,)}
SHARED_IDS = [str(uuid.UUID(int=n + 1)) for n in range(4)]

operations = st.tuples(
    st.sampled_from(["a", "b"]),
    st.sampled_from(["put", "post", "patch", "delete", "get", "bulk-save", "bulk-load", "bulk-delete"]),
    st.sampled_from(SHARED_IDS),
    st.sampled_from([1, 2]),  # the agent a write names
    st.integers(0, 3),  # the start time it writes
)


def predicted(model: dict[str, tuple[int, int]], holder: str, op: str, sid: str, agent: int, start: int):
    """What the API must answer, and the model after the call."""
    mine = KEY_AGENTS[holder]
    row = model.get(sid)
    visible = row is not None and row[0] in mine
    after = dict(model)
    if op == "get":
        return (200 if visible else 404), after
    if op == "bulk-load":
        return 200, after
    if op in ("delete", "bulk-delete"):
        if visible:
            del after[sid]
        return (204 if op == "delete" else 200), after
    if op == "patch":
        if not visible:
            return 404, after
        if agent not in mine:
            return 403, after
        after[sid] = (agent, start)
        return 200, after
    if agent not in mine:
        return 403, after
    if op == "post":
        if row is not None:
            return 409, after
        after[sid] = (agent, start)
        return 201, after
    if row is not None and not visible:  # put, bulk-save over another agent's session
        return 403, after
    after[sid] = (agent, start)
    if op == "put":
        return (200 if row is not None else 201), after
    return 200, after


def send(http: httpx.Client, keys: dict[str, str], holder, op, sid, agent, start) -> int:
    headers = with_key(keys[holder])
    record = {"agent_id": agent, "started_at_ns": start}
    detail = f"/api/sessions/{sid}/"
    answer = {
        "put": lambda: http.put(detail, json=record, headers=headers),
        "post": lambda: http.post("/api/sessions/", json={**record, "session_id": sid}, headers=headers),
        "patch": lambda: http.patch(detail, json=record, headers=headers),
        "delete": lambda: http.delete(detail, headers=headers),
        "get": lambda: http.get(detail, headers=headers),
        "bulk-save": lambda: http.post(
            "/api/sessions/bulk-save/", json={"sessions": [{**record, "session_id": sid}]}, headers=headers
        ),
        "bulk-load": lambda: http.post(
            "/api/sessions/bulk-load/", json={"session_ids": [sid]}, headers=headers
        ),
        "bulk-delete": lambda: http.post(
            "/api/sessions/bulk-delete/", json={"session_ids": [sid]}, headers=headers
        ),
    }[op]()
    return answer.status_code


def test_two_keys_at_random_leave_exactly_what_each_was_allowed_to_do(http):
    keys = {holder: new_key(agents=agents) for holder, agents in KEY_AGENTS.items()}

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(operations, min_size=1, max_size=12))
    def run(sequence):
        ExecutionSession.objects.all().delete()
        model: dict[str, tuple[int, int]] = {}
        for holder, op, sid, agent, start in sequence:
            want, model = predicted(model, holder, op, sid, agent, start)
            got = send(http, keys, holder, op, sid, agent, start)
            assert got == want, (holder, op, sid, agent, start)
            assert stored() == model

    run()


# -- guessing through the real server ------------------------------------------------------


def test_a_forged_forwarded_for_does_not_escape_the_failed_auth_limit(django_db_setup, django_db_blocker):
    """Through uvicorn as serve.sh runs it (no proxy headers) and the host project's NUM_PROXIES (0)."""
    with django_db_blocker.unblock():
        url = subprocess_database_url()
    key = new_key()
    env = {"SESSIONS_AUTH_FAILURE_RATE": "3/min"}
    with uvicorn_server(url, env=env) as served, httpx.Client(base_url=served, timeout=10) as client:
        statuses = [
            client.get(
                "/api/sessions/",
                headers={"Authorization": "Api-Key nosuch.guess", "X-Forwarded-For": f"198.51.100.{n}"},
            ).status_code
            for n in range(5)
        ]
        right = client.get("/api/sessions/", headers={**with_key(key), "X-Forwarded-For": "198.51.100.200"})
    assert statuses == [401, 401, 401, 429, 429]
    assert right.status_code == 429 and int(right.headers["Retry-After"]) > 0
