"""``SessionsEdge`` answers as the viewset does: the same request to both, the answers compared.

Two ASGI applications over the same database: the host project's
(``SessionsEdge`` in front of Django's) and Django's alone. hypothesis
draws a request (method, route, id, body, credential, ``Accept``,
``Content-Type``) and a state (whose rows exist, whether the caller is
throttled or its address refused for failed authentications); the request
is sent to one application, the state put back, the request sent to the
other. Status, JSON body, the headers a client reads and the rows left
behind must be equal; and the edge must have answered a good share of the
requests itself (or the comparison proves nothing).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.core.asgi import get_asgi_application
from django.core.cache import caches
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rest_framework.authtoken.models import Token

from sessions_app.api import auth_cache, throttling
from sessions_app.asgi import SessionsEdge
from sessions_app.models import AgentKey, ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db(transaction=True)

NOW = 1_800_000_030.0  # 30 s into a minute: throttle windows and waits are the same for both sends
RATE = 1000
FAILURES = 5
S1 = SessionId.parse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0")  # stored for agent 1
S2 = SessionId.parse("1f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0")  # stored for agent 2
S3 = SessionId.parse("2f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0")  # absent
COMPARED_HEADERS = (
    "content-type",
    "content-length",
    "strict-transport-security",
    "allow",
    "www-authenticate",
    "retry-after",
    "location",
    "vary",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "cross-origin-opener-policy",
)


class Counting:
    """Django's application, counting the requests the edge handed to it."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.calls = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.calls += 1
        await self.app(scope, receive, send)


@pytest.fixture
def world(make_user, monkeypatch, settings) -> Iterator[Any]:
    """Users, tokens and keys, the frozen clocks and rates, and the two applications."""
    settings.SESSIONS_APP = {**getattr(settings, "SESSIONS_APP", {}), "AUTH_FAILURE_RATE": f"{FAILURES}/min"}
    for cls in (throttling.UserRateThrottle, throttling.AnonRateThrottle):
        monkeypatch.setattr(cls, "timer", staticmethod(lambda: NOW))
        monkeypatch.setattr(cls, "THROTTLE_RATES", {"anon": f"{RATE}/min", "user": f"{RATE}/min"})
    monkeypatch.setattr(throttling.AuthFailureThrottle, "timer", staticmethod(lambda: NOW))

    def token(*actions: str, name: str, active: bool = True) -> str:
        user = make_user(*actions, username=name)
        if not active:
            user.is_active = False
            user.save()
        return "Token " + Token.objects.create(user=user).key

    def key(agents: list[int], scopes: list[str], **extra: Any) -> str:
        return "Api-Key " + AgentKey.objects.create_key(name="k", agent_ids=agents, scopes=scopes, **extra)[1]

    credentials = {
        "operator": token("view", "add", "change", "delete", name="operator"),
        "key 1 rwd": key([1], ["read", "write", "delete"]),
        "key 1,2 rw": key([1, 2], ["read", "write"]),
        "reader": token("view", name="reader"),
        "writer": token("view", "add", "change", name="writer"),
        "nobody": token(name="nobody"),
        "inactive": token("view", "add", "change", "delete", name="gone", active=False),
        "key 2 r": key([2], ["read"]),
        "key expired": key([1], ["read", "write", "delete"], expiry_date="2000-01-01T00:00:00Z"),
        "unknown token": "Token " + "0" * 40,
        "unknown key": "Api-Key abcdefgh.0123456789abcdef0123456789abcdef",
        "malformed": "Token a b",
        "basic": "Basic dXNlcjpwdw==",
        "none": None,
    }
    settings.SECURE_HSTS_SECONDS = 3600  # an https answer carries HSTS: the edge's must too
    django_app = Counting(get_asgi_application())
    loop = asyncio.new_event_loop()  # one for the test, as a server's: the store's pool lives in it
    yield credentials, SessionsEdge(django_app), django_app, loop.run_until_complete
    from sessions_app.storage.db.postgresql import close_loop_pools

    loop.run_until_complete(close_loop_pools())
    loop.run_until_complete(loop.shutdown_asyncgens())
    loop.close()


async def send(app: Any, request: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
    """Status, body (JSON: its bytes) and the compared headers of ``request`` sent to ``app``."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 40000))
    base = f"{request.get('scheme', 'http')}://testserver"
    async with httpx.AsyncClient(transport=transport, base_url=base) as client:
        response = await client.request(
            request["method"], request["path"], content=request["body"], headers=request["headers"]
        )
    if response.headers.get("content-type", "").startswith("text/html"):
        body = "(the browsable API's page: a new CSRF token each time)"
    else:
        body = response.content
    return response.status_code, body, {name: response.headers.get(name) for name in COMPARED_HEADERS}


def counters(pks: list[object]) -> dict[str, object]:
    """The throttles' and the failed-authentication counts, as the cache holds them."""
    cache = caches["default"]
    window = int(NOW // 60)
    keys = [f"throttle_user_{pk}:{window}" for pk in pks] + [f"throttle_anon_127.0.0.1:{window}"]
    keys.append(throttling.AuthFailureThrottle()._key(Address(), NOW))  # type: ignore[arg-type]
    return {key: cache.get(key) for key in keys}


class Address:
    META = {"REMOTE_ADDR": "127.0.0.1"}
    headers: dict[str, str] = {}


def rows() -> list[tuple[bytes, int, int]]:
    return sorted(ExecutionSession.objects.values_list("session_id", "agent_id", "started_at_ns"))


def put_back(state: dict[str, Any], credentials: dict[str, Any]) -> None:
    """The rows and the counters as the state says, whatever the last request did."""
    ExecutionSession.objects.all().delete()
    for session_id, agent in ((S1, 1), (S2, 2)):
        if state[session_id]:
            ExecutionSession.objects.create(session_id=session_id, agent_id=agent, started_at_ns=5)
    cache = caches["default"]
    window = int(NOW // 60)
    for user_pk in state["user pks"]:
        key = f"throttle_user_{user_pk}:{window}"
        cache.set(key, RATE if state["throttled"] else 0, 120)
    cache.delete(f"throttle_anon_127.0.0.1:{window}")
    failures = throttling.AuthFailureThrottle()
    cache.set(failures._key(Address(), NOW), FAILURES if state["refused"] else 0, 120)  # type: ignore[arg-type]


def user_pks() -> list[object]:
    from django.contrib.auth import get_user_model

    return [*get_user_model().objects.values_list("pk", flat=True), *(
        f"agent-key:{prefix}" for prefix in AgentKey.objects.values_list("prefix", flat=True)
    )]  # fmt: skip


GOOD_IDS = st.sampled_from([str(S1), str(S2), str(S3), S1.hex(), str(S1).upper()])
IDS = GOOD_IDS | st.sampled_from(["not-an-id", "0" * 31, f"{S1}."])
INTEGERS = st.one_of(
    st.sampled_from([1, 2, 3, 0, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64]),
    st.sampled_from(["1", "2", "007", "-1", "1.5", "", "18446744073709551615", "x", " 1"]),
    st.sampled_from([1.0, True, None, [1], {"a": 1}]),
)
VALID = st.fixed_dictionaries(
    {
        "agent_id": st.sampled_from([1, 2, "1", "2"]),
        "started_at_ns": st.sampled_from([0, 7, "18446744073709551615"]),
    },
    optional={"session_id": st.sampled_from([str(S1), S1.hex()])},
)
ODD = st.fixed_dictionaries(
    {"agent_id": INTEGERS, "started_at_ns": INTEGERS},
    optional={"session_id": IDS | st.none() | st.just(1), "started_at": st.just("x"), "extra": st.just(1)},
)


def mostly(draw: Any, common: Any, rare: Any) -> Any:
    """Four draws in five from ``common``: what the edge serves comes up often, the rest still does.

    (hypothesis favours 0 and the ends of a range: those pick ``common``.)
    """
    return draw(rare if draw(st.integers(0, 9)) in (3, 7) else common)


def bulk_data(draw: Any, path: str) -> Any:
    if path.endswith("bulk-save/"):

        def item(ids: Any, record: Any) -> Any:
            return st.builds(lambda sid, fields: {**fields, "session_id": sid}, ids, record)

        good = st.fixed_dictionaries({"sessions": st.lists(item(GOOD_IDS, VALID), max_size=4)})
        odd = st.fixed_dictionaries(
            {"sessions": st.lists(item(IDS, ODD) | st.sampled_from([None, 1, "x"]), max_size=4)}
        ) | st.sampled_from([{"sessions": 1}, {}, []])
        return mostly(draw, good, odd)
    good = st.fixed_dictionaries({"session_ids": st.lists(GOOD_IDS, max_size=4)})
    odd = st.fixed_dictionaries({"session_ids": st.lists(IDS | st.just(5), max_size=4)}) | st.sampled_from(
        [{"ids": []}, [], {"session_ids": "x"}]
    )
    return mostly(draw, good, odd)


@st.composite
def requests(draw: Any, credentials: list[str]) -> dict[str, Any]:
    """A request: four in five of each part in the form agents send, the fifth anything."""
    if draw(st.booleans()):
        path = "/api/sessions/" + draw(st.sampled_from(["bulk-save/", "bulk-load/", "bulk-delete/"]))
        method = mostly(draw, st.just("POST"), st.sampled_from(["GET", "PUT", "DELETE", "PATCH"]))
        data: Any = bulk_data(draw, path)
    else:
        path = f"/api/sessions/{mostly(draw, GOOD_IDS, IDS)}/"
        method = mostly(
            draw,
            st.sampled_from(["GET", "PUT", "DELETE"]),
            st.sampled_from(["PATCH", "HEAD", "OPTIONS", "POST"]),
        )
        data = mostly(draw, VALID, ODD | st.sampled_from([[], "x", None]))
    body = mostly(draw, st.just("json"), st.sampled_from(["broken", "empty"]))
    content = {"json": json.dumps(data).encode(), "broken": b'{"agent_id": 1,', "empty": b""}[body]
    headers = {}
    credential = mostly(draw, st.sampled_from(credentials[:3]), st.sampled_from(credentials))
    if credential is not None:
        headers["Authorization"] = credential
    accept = mostly(
        draw,
        st.sampled_from([None, "*/*", "application/json"]),
        st.sampled_from(["text/html", "application/json; indent=4", "application/xml"]),
    )
    if accept is not None:
        headers["Accept"] = accept
    if method in ("PUT", "POST", "PATCH") and body != "empty":
        headers["Content-Type"] = mostly(
            draw,
            st.sampled_from(["application/json", "application/json; charset=utf-8"]),
            st.sampled_from(["text/plain", "application/x-www-form-urlencoded"]),
        )
    if not draw(st.integers(0, 9)):
        path += draw(st.sampled_from(["?format=json", "?x=1"]))
    scheme = draw(st.sampled_from(["http", "https"]))
    return {"method": method, "path": path, "body": content, "headers": headers, "scheme": scheme}


STATES = st.fixed_dictionaries(
    {
        S1: st.booleans(),
        S2: st.booleans(),
        "throttled": st.sampled_from([False, False, False, True]),
        "refused": st.sampled_from([False, False, False, True]),
    }
)


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("sessions_app", "django.request")):
            self.records.append(record)


def test_the_edge_answers_as_the_viewset(world):
    credentials, edge, django_app, run = world
    log = Records()
    logging.getLogger().addHandler(log)
    pks = user_pks()
    tally = {"served": 0, "handed": 0}
    answered: set[tuple[str, str, int]] = set()

    # Every credential once through Django for each method: the answers the edge reads are kept.
    for credential in credentials.values():
        for method in ("GET", "PUT", "DELETE"):
            headers = {"Authorization": credential} if credential else {}
            put_back(
                {S1: False, S2: False, "throttled": False, "refused": False, "user pks": pks}, credentials
            )
            headers["Content-Type"] = "application/json"
            run(
                send(
                    django_app,
                    {"method": method, "path": f"/api/sessions/{S3}/", "body": b"{}", "headers": headers},
                )
            )

    # Always among the examples: the agents' write, as the edge serves it (created, then replaced). The
    # random draws come to it in a few in a hundred only; without it a run could miss a kind.
    write = {
        "method": "PUT",
        "path": f"/api/sessions/{S1}/",
        "body": json.dumps({"agent_id": 1, "started_at_ns": 7}).encode(),
        "headers": {"Authorization": credentials["operator"], "Content-Type": "application/json"},
        "scheme": "http",
    }
    calm = {S2: False, "throttled": False, "refused": False}

    @settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @example(request=write, state={S1: False, **calm})
    @example(request=write, state={S1: True, **calm})
    @given(request=requests(list(credentials.values())), state=STATES)
    def compare(request: dict[str, Any], state: dict[str, Any]) -> None:
        state = {**state, "user pks": pks}
        put_back(state, credentials)
        before = django_app.calls
        log.records.clear()
        through_edge = run(send(edge, request))
        logged_edge = [(r.name, r.levelname, r.getMessage()) for r in log.records]
        counted_edge = counters(pks)
        tally["served" if django_app.calls == before else "handed"] += 1
        if django_app.calls == before:
            answered.add((request["method"], request["path"].split("/")[3][:4], through_edge[0]))
        after_edge = rows()
        put_back(state, credentials)
        log.records.clear()
        through_django = run(send(django_app, request))
        assert [(r.name, r.levelname, r.getMessage()) for r in log.records] == logged_edge
        assert counters(pks) == counted_edge  # the same throttle and failure counts
        after_django = rows()
        context = (request, {str(k): v for k, v in state.items() if k != "user pks"})
        assert through_edge == through_django, context
        assert after_edge == after_django, context

    try:
        compare()
    finally:
        logging.getLogger().removeHandler(log)
    print(f"edge: {tally}, {sorted(answered)}")
    # The comparison means something only if the edge answered many requests itself.
    assert tally["served"] >= 45, tally
    assert tally["handed"] >= 45, tally
    assert len(answered) >= 8, answered  # and answered many kinds of calls: statuses, routes


def test_the_edge_serves_the_hot_calls_of_kept_credentials(world):
    """The common calls are answered by the edge, not handed on (or the fast path would be idle)."""
    credentials, edge, django_app, run = world
    operator = {"Authorization": credentials["operator"], "Content-Type": "application/json"}
    saved = {"sessions": [{"session_id": str(S1), "agent_id": 1, "started_at_ns": 2}]}
    calls = [
        ("PUT", f"/api/sessions/{S3}/", {"agent_id": 1, "started_at_ns": "18446744073709551615"}),
        ("GET", f"/api/sessions/{S3}/", None),
        ("POST", "/api/sessions/bulk-load/", {"session_ids": [str(S3)]}),
        ("POST", "/api/sessions/bulk-save/", saved),
        ("POST", "/api/sessions/bulk-delete/", {"session_ids": [str(S1)]}),
        ("DELETE", f"/api/sessions/{S3}/", None),
    ]
    requests = [
        {"method": method, "path": path, "body": b"" if data is None else json.dumps(data).encode(),
         "headers": operator}
        for method, path, data in calls
    ]  # fmt: skip
    for request in requests:  # first through Django: its answers are kept
        run(send(django_app, request))
    handed = django_app.calls
    assert [run(send(edge, request))[0] for request in requests] == [201, 200, 200, 200, 200, 204]
    assert django_app.calls == handed  # none handed on
    assert rows() == []
    # A credential this process has not seen yet goes to Django, which keeps its answer.
    fresh = {"Authorization": "Token " + Token.objects.get(user__username="reader").key}
    read = {"method": "GET", "path": f"/api/sessions/{S3}/", "body": b"", "headers": fresh}
    assert run(send(edge, read))[0] == 404
    assert django_app.calls == handed + 1
    assert run(send(edge, read))[0] == 404
    assert django_app.calls == handed + 1


def test_requests_of_a_credential_not_kept_yet_go_to_django_one_at_a_time(world, monkeypatch):
    """The first of a burst goes to Django (which keeps the answer); the others wait, then are served here."""
    credentials, edge, django_app, run = world
    monkeypatch.setattr("sessions_app.asgi.FLIGHT_WAIT", 30.0)  # a slow machine: still one flight
    Token.objects.filter(user__username="operator").delete()
    operator = "Token " + Token.objects.create(user=User.objects.get(username="operator")).key
    path = f"/api/sessions/{S3}/"

    async def burst(request: dict[str, Any], size: int) -> list[int]:
        return [status for status, _, _ in await asyncio.gather(*[send(edge, request) for _ in range(size)])]

    handed = django_app.calls
    get = {"method": "GET", "path": path, "body": b"", "headers": {"Authorization": operator}}
    assert run(burst(get, 6)) == [404] * 6
    assert django_app.calls == handed + 1
    # A PUT's waiters are admitted again with the body they had sent: the first (Django's) creates.
    body = json.dumps({"agent_id": 1, "started_at_ns": 5}).encode()
    put = {
        **get,
        "method": "PUT",
        "body": body,
        "headers": {**get["headers"], "Content-Type": "application/json"},
    }
    auth_cache._answers.clear()  # as when the kept answers expire
    assert sorted(run(burst(put, 5))) == [200] * 4 + [201]
    assert django_app.calls == handed + 2
    assert rows() == [(bytes(S3), 1, 5)]
    # A credential that is never kept (unknown): the waiters still get Django's answer, each.
    unknown = {**get, "headers": {"Authorization": credentials["unknown token"]}}
    assert run(burst(unknown, 4)) == [401] * 4
    assert django_app.calls == handed + 2 + 4


def test_a_stored_row_that_does_not_decode_is_the_same_500_and_log_lines(world, caplog):
    from .test_store_failures import plant_undecodable_row

    credentials, edge, django_app, run = world
    plant_undecodable_row(S1)
    read = {"method": "GET", "path": f"/api/sessions/{S1}/", "body": b"",
            "headers": {"Authorization": credentials["operator"]}}  # fmt: skip
    logged, answered = [], []
    for app in (django_app, edge):  # Django first: its answers are kept, the edge then serves
        caplog.clear()
        handed = django_app.calls
        answered.append(run(send(app, read)))
        logged.append([(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= 30])
    assert django_app.calls == handed  # the edge answered the second
    assert answered[0] == answered[1]
    assert answered[1][:2] == (
        500,
        b'{"detail":"A stored session does not decode; an operator has been told."}',
    )
    assert logged[0] == logged[1]
    assert [(name, level) for name, level, _ in logged[1]] == [
        ("sessions_app.api", "ERROR"),
        ("django.request", "ERROR"),
    ]
    assert "agent_id must be an integer" in logged[1][0][2]


SAVED = {"sessions": [{"session_id": str(S1), "agent_id": 1, "started_at_ns": 1}]}
BULK_CASES = [
    ("post", "/api/sessions/bulk-load/", {"session_ids": [str(S1)]}, {"view"}, (200, (3, 3))),
    ("post", "/api/sessions/bulk-save/", SAVED, {"add", "change"}, (200, (1, 1))),
    ("post", "/api/sessions/bulk-delete/", {"session_ids": [str(S1)]}, {"delete"}, (200, None)),
]


@pytest.mark.parametrize(
    "holds", [("view",), ("add", "change"), ("delete",), ("view", "add", "change", "delete"), ()]
)
def test_the_permission_matrix_through_the_edge(world, make_user, holds):
    """``test_api``'s matrix and the bulk calls, each sent twice: Django keeps its answers, the edge serves.

    A call the user may make is answered by the edge the second time; a
    refused one is handed to Django each time (its 403 is Django's).
    """
    from .test_api import PERMISSION_CASES

    _, edge, django_app, run = world
    token = "Token " + Token.objects.create(user=make_user(*holds, username="holds-" + "-".join(holds))).key
    for method, path, body, needs, (status, after) in [*PERMISSION_CASES, *BULK_CASES]:
        request = {"method": method.upper(), "path": path,
                   "body": b"" if body is None else json.dumps(body).encode(),
                   "headers": {"Authorization": token, "Content-Type": "application/json"}}  # fmt: skip
        answers = []
        for app in (django_app, edge):
            ExecutionSession.objects.all().delete()
            ExecutionSession.objects.create(session_id=S1, agent_id=3, started_at_ns=3)
            before = django_app.calls
            answers.append(run(send(app, request))[0])
            row = ExecutionSession.objects.filter(pk=S1).values_list("agent_id", "started_at_ns").first()
            allowed = needs <= set(holds)
            assert row == (after if allowed else (3, 3)), (method, path, holds)
            if app is edge:
                hot = (
                    request["method"] in ("GET", "PUT", "DELETE") and path != "/api/sessions/"
                ) or "bulk" in path
                assert (django_app.calls == before) == (allowed and hot), (method, path, holds)
        assert answers == [status if allowed else 403] * 2, (method, path, holds)


async def raw(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> Any:
    """``app`` called as a server calls it, the body in ``chunks`` (several messages), no client library."""
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1} for i, chunk in
                enumerate(chunks)] or [{"type": "http.request", "body": b"", "more_body": False}]  # fmt: skip
    sent: list[dict[str, Any]] = []
    finished = asyncio.Event()

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        await finished.wait()
        return {"type": "http.disconnect"}

    async def record(message: dict[str, Any]) -> None:
        sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            finished.set()

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), *headers], "client": ("127.0.0.1", 40000),
             "server": ("testserver", 80)}  # fmt: skip
    await app(scope, receive, record)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize(
    ("chunks", "length", "served"),
    [
        ([b'{"agent_id": 1, ', b'"started_at_ns": 2}'], True, True),  # two messages, Content-Length: served
        ([b'{"agent_id": 1, ', b'"started_at_ns": 2}'], False, False),  # chunked: DRF reads no body
        (
            [b'{"agent_id": 1, "started_at_ns": 2, "pad": "' + b"x" * 3000 + b'"}'],
            True,
            False,
        ),  # past the limit
    ],
)
def test_bodies_as_a_server_delivers_them(world, settings, chunks, length, served):
    """Several body messages, no Content-Length, a body past DATA_UPLOAD_MAX_MEMORY_SIZE: Django's answer."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    credentials, edge, django_app, run = world
    headers = [(b"authorization", credentials["operator"].encode()), (b"content-type", b"application/json")]
    if length:
        headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
    answers = []
    for app in (django_app, edge):
        ExecutionSession.objects.all().delete()
        handed = django_app.calls
        answers.append((run(raw(app, "PUT", f"/api/sessions/{S3}/", headers, list(chunks))), rows()))
    assert answers[0] == answers[1]
    assert (django_app.calls == handed) == served
    assert answers[1][0][0] == (201 if served else 400)
