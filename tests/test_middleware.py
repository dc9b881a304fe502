"""The host project's middleware (aa_project/middleware.py) under ASGI and WSGI.

Requests run through Django's ASGI handler, as uvicorn runs them, with every
use of the database recorded with its thread: the part of the
middleware that runs in the event loop never touches the database (Django's
own guard, ``SynchronousOnlyOperation``, would fail such a request with a
500, and the record shows it too), the session save and the message storage
still run, in a thread. The answers (status, the headers a browser reads,
the cookies set) are the same as with Django's own middleware classes.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import got_request_exception
from django.db.backends.base.base import BaseDatabaseWrapper
from django.test import Client, override_settings
from rest_framework.authtoken.models import Token

from aa_project.middleware import in_loop
from aa_project.settings import MIDDLEWARE as PROJECT_MIDDLEWARE

DJANGO_MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "aa_project.middleware.StaticFilesMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

# A deliberately wrong adapter: the session saved in the loop. The guard must catch it.
UnguardedSessionMiddleware = in_loop(DjangoSessionMiddleware)

COMPARED_HEADERS = (
    "content-type",
    "location",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
    "cross-origin-opener-policy",
    "vary",
    "cache-control",
    "www-authenticate",
    "content-length",
)
PASSWORD = "Middleware-Check-123"


def running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@pytest.fixture
def database_uses(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every use of a connection (a cursor, a transaction: each ensures the connection first).

    Recorded as (thread name, whether an event loop runs in that thread).
    """
    assert not os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE"), (
        "Django's guard against the ORM in the loop is off"
    )
    record: list[tuple[str, bool]] = []
    original = BaseDatabaseWrapper.ensure_connection

    def ensure_connection(self: BaseDatabaseWrapper) -> None:
        record.append((threading.current_thread().name, running_loop()))
        original(self)

    monkeypatch.setattr(BaseDatabaseWrapper, "ensure_connection", ensure_connection)
    return record


@pytest.fixture
def errors() -> Iterator[list[BaseException]]:
    seen: list[BaseException] = []

    def receiver(sender: Any, request: Any = None, **kwargs: Any) -> None:
        import sys

        seen.append(sys.exc_info()[1])  # type: ignore[arg-type]

    got_request_exception.connect(receiver, dispatch_uid="test_middleware")
    yield seen
    got_request_exception.disconnect(dispatch_uid="test_middleware")


class Answer:
    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status = status
        self.headers: dict[str, str] = {}
        self.cookies: dict[str, str] = {}
        for name, value in headers:
            key, text = name.decode("latin-1").lower(), value.decode("latin-1")
            if key == "set-cookie":
                cookie_name, _, rest = text.partition("=")
                self.cookies[cookie_name] = rest.split(";", 1)[0]
            else:
                self.headers[key] = text
        self.body = body

    def compared(self) -> tuple[int, dict[str, str], list[str]]:
        """What must not differ between two middleware lists (cookie values are random; their names)."""
        shown = {key: self.headers[key] for key in COMPARED_HEADERS if key in self.headers}
        return self.status, shown, sorted(self.cookies)


async def call(
    app: ASGIHandler,
    method: str,
    path: str,
    *,
    cookies: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> Answer:
    """One request through the ASGI application, as a server sends it."""
    path, _, query = path.partition("?")
    raw = [(b"host", b"testserver")]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    for name, value in (headers or {}).items():
        raw.append((name.lower().encode(), value.encode()))
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    done = asyncio.Event()
    sent_body = False
    messages: list[Mapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await done.wait()
        return {"type": "http.disconnect"}

    async def send(message: Mapping[str, Any]) -> None:
        messages.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            done.set()

    await app(scope, receive, send)
    start = messages[0]
    content = b"".join(m.get("body", b"") for m in messages[1:])
    return Answer(start["status"], start["headers"], content)


def form(**fields: str) -> bytes:
    from urllib.parse import urlencode

    return urlencode(fields).encode()


FORM = {"content-type": "application/x-www-form-urlencoded"}


async def scenario(middleware: list[str], token: str) -> list[Answer]:
    """The admin's and the API's answers, a login and a message included, through one middleware list."""
    with override_settings(MIDDLEWARE=middleware):
        app = ASGIHandler()
        answers = []
        login_page = await call(app, "GET", "/admin/login/")
        answers.append(login_page)
        csrf = login_page.cookies["csrftoken"]
        match = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', login_page.body)
        assert match
        form_token = match.group(1).decode()
        # APPEND_SLASH redirects, the admin's and the API's.
        answers.append(await call(app, "GET", "/admin"))
        answers.append(await call(app, "GET", "/api/sessions"))
        # CSRF refusals: no token, a wrong one, a wrong origin.
        answers.append(await call(app, "POST", "/admin/login/", headers=FORM, body=form(username="a")))
        answers.append(
            await call(
                app,
                "POST",
                "/admin/login/",
                cookies={"csrftoken": csrf},
                headers=FORM,
                body=form(username="a", csrfmiddlewaretoken="x" * 64),
            )
        )
        answers.append(
            await call(
                app,
                "POST",
                "/admin/login/",
                cookies={"csrftoken": csrf},
                headers={**FORM, "origin": "http://evil.example"},
                body=form(username="a", csrfmiddlewaretoken=form_token),
            )
        )
        # A login: the session is saved (in a thread).
        login = await call(
            app,
            "POST",
            "/admin/login/?next=/admin/",
            cookies={"csrftoken": csrf},
            headers=FORM,
            body=form(username="mw-admin", password=PASSWORD, csrfmiddlewaretoken=form_token, next="/admin/"),
        )
        answers.append(login)
        session = {"csrftoken": csrf, "sessionid": login.cookies["sessionid"]}
        answers.append(await call(app, "GET", "/admin/", cookies=session))
        # An object added: a message stored, then shown (the storage in a thread both times).
        added = await call(
            app,
            "POST",
            "/admin/auth/group/add/",
            cookies=session,
            headers=FORM,
            body=form(name="reviewers", csrfmiddlewaretoken=form_token),
        )
        answers.append(added)
        assert "messages" in added.cookies, added.status
        shown = await call(app, "GET", added.headers["location"], cookies={**session, **added.cookies})
        assert b"was added successfully" in shown.body
        answers.append(shown)
        # The API, the docs, static files, a 404.
        answers.append(await call(app, "GET", "/api/sessions/", headers={"authorization": f"Token {token}"}))
        answers.append(await call(app, "GET", "/api/sessions/"))
        answers.append(await call(app, "GET", "/api/docs/"))
        answers.append(await call(app, "GET", "/static/admin/css/base.css"))
        answers.append(await call(app, "GET", "/no/such/page/"))
        return answers


@pytest.fixture
def token(db: None) -> str:
    get_user_model().objects.create_superuser("mw-admin", "mw@localhost", PASSWORD)
    return str(Token.objects.create(user=get_user_model().objects.get(username="mw-admin")).key)


@pytest.mark.django_db(transaction=True)
def test_in_loop_middleware_answers_as_djangos_and_never_queries_in_the_loop(
    token: str, database_uses: list[tuple[str, bool]], errors: list[BaseException]
) -> None:
    assert PROJECT_MIDDLEWARE != DJANGO_MIDDLEWARE
    theirs = asyncio.run(scenario(DJANGO_MIDDLEWARE, token))
    # The same database state for the second run (the admin lists recent actions).
    Group.objects.all().delete()
    LogEntry.objects.all().delete()
    del database_uses[:]
    ours = asyncio.run(scenario(PROJECT_MIDDLEWARE, token))
    assert errors == []
    in_the_loop = [thread for thread, loop in database_uses if loop]
    assert in_the_loop == [], f"the database used in the event loop: {in_the_loop}"
    assert database_uses, "the scenario queried nothing: the guard saw nothing"
    for number, (mine, django) in enumerate(zip(ours, theirs, strict=True)):
        assert mine.compared() == django.compared(), number
    statuses = [answer.status for answer in ours]
    assert statuses == [200, 301, 301, 403, 403, 403, 302, 200, 302, 200, 200, 401, 200, 200, 404], statuses
    login_page, admin_redirect = ours[0], ours[1]
    assert login_page.headers["x-frame-options"] == "DENY"
    assert login_page.headers["x-content-type-options"] == "nosniff"
    assert login_page.headers["referrer-policy"] == "same-origin"
    assert login_page.headers["cross-origin-opener-policy"] == "same-origin"
    assert admin_redirect.headers["location"] == "/admin/"
    assert ours[13].headers["content-type"].startswith("text/css")


@pytest.mark.django_db(transaction=True)
def test_the_guard_catches_a_session_saved_in_the_loop(
    token: str, database_uses: list[tuple[str, bool]], errors: list[BaseException]
) -> None:
    """The control: the same scenario with the session's save left in the loop fails, as it must."""
    middleware = [
        path.replace(
            "aa_project.middleware.SessionMiddleware", "tests.test_middleware.UnguardedSessionMiddleware"
        )
        for path in PROJECT_MIDDLEWARE
    ]
    with pytest.raises((KeyError, AssertionError)):
        asyncio.run(scenario(middleware, token))
    assert any(loop for _, loop in database_uses)
    assert any(type(error).__name__ == "SynchronousOnlyOperation" for error in errors)


@pytest.mark.django_db
def test_under_wsgi_the_classes_are_djangos_and_static_files_are_served() -> None:
    client = Client(enforce_csrf_checks=True)
    page = client.get("/admin/login/")
    assert page.status_code == 200
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["Cross-Origin-Opener-Policy"] == "same-origin"
    css = client.get("/static/admin/css/base.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert b"".join(css.streaming_content).startswith(b"/*")  # type: ignore[attr-defined]
    assert client.get("/admin").headers["Location"] == "/admin/"
    assert client.post("/admin/login/", {"username": "a"}).status_code == 403


def test_djangos_deploy_checks_see_the_adapters_as_djangos_classes() -> None:
    """Django finds its middleware by dotted path; the adapters' check reads each adapter as its class."""
    from aa_project.middleware import check_deploy_with_the_adapters

    def ids(**overrides: Any) -> set[str]:
        with override_settings(**overrides):
            return {message.id for message in check_deploy_with_the_adapters() if message.id}

    assert "security.W004" in ids(SECURE_HSTS_SECONDS=0)
    assert "security.W004" not in ids(SECURE_HSTS_SECONDS=3600)
    assert "security.W019" in ids(X_FRAME_OPTIONS="SAMEORIGIN")
    assert "security.W016" in ids(CSRF_COOKIE_SECURE=False)
    without = [
        path for path in PROJECT_MIDDLEWARE if not path.endswith(("SecurityMiddleware", "CsrfViewMiddleware"))
    ]
    found = ids(MIDDLEWARE=without, SECURE_HSTS_SECONDS=0)
    assert {"aa_project.W001", "aa_project.W003"} <= found and "security.W004" not in found
    assert ids(MIDDLEWARE=DJANGO_MIDDLEWARE) == set()
