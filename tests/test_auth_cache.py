"""The API's cached authentication and permission answers (``sessions_app.api.auth_cache``).

A cached answer saves the token and permission queries of a request; a
change saved through Django must take effect on the very next request.
Inside a test's transaction nothing commits, so the changes here run in
``django_capture_on_commit_callbacks(execute=True)``, as a committed
change would.
"""

import logging
import time

import pytest
from django.contrib.auth.models import Group, Permission
from django.core.cache import caches
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from sessions_app.api import auth_cache
from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db


@pytest.fixture
def session_url():
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=7, started_at_ns=1)
    return f"/api/sessions/{sid}/"


@pytest.fixture
def viewer(make_user, token_client):
    user = make_user("view", username="viewer")
    client, token = token_client(user)
    return user, token, client


def queries_of(client, url):
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return response.status_code, len(captured)


def test_a_repeated_request_skips_the_token_and_permission_queries(viewer, session_url):
    _, _, client = viewer
    first_status, first_queries = queries_of(client, session_url)
    second_status, second_queries = queries_of(client, session_url)
    assert (first_status, second_status) == (200, 200)
    # First: token+user, the user's and the groups' permissions, the load.
    assert first_queries == 4
    assert second_queries == 1


def test_timeout_zero_turns_the_cache_off(viewer, session_url, settings):
    settings.SESSIONS_APP = {"AUTH_CACHE_TIMEOUT": 0}
    _, _, client = viewer
    assert queries_of(client, session_url) == (200, 4)
    assert queries_of(client, session_url) == (200, 4)


def delete_the_token(user, token):
    token.delete()


def deactivate_the_user(user, token):
    user.is_active = False
    user.save()


def revoke_the_permission(user, token):
    user.user_permissions.clear()


@pytest.mark.parametrize(
    ("change", "refused_with"),
    [(delete_the_token, 401), (deactivate_the_user, 401), (revoke_the_permission, 403)],
    ids=["deleted token", "inactive user", "revoked permission"],
)
def test_a_change_is_refused_on_the_next_request(
    viewer, session_url, django_capture_on_commit_callbacks, change, refused_with
):
    user, token, client = viewer
    assert client.get(session_url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        change(user, token)
    assert client.get(session_url).status_code == refused_with


def test_permissions_granted_and_revoked_through_a_group_apply_on_the_next_request(
    make_user, token_client, session_url, django_capture_on_commit_callbacks
):
    user = make_user(username="grouped")
    client, _ = token_client(user)
    assert client.get(session_url).status_code == 403  # a refusal is cached too
    group = Group.objects.create(name="readers")
    with django_capture_on_commit_callbacks(execute=True):
        group.permissions.add(Permission.objects.get(codename="view_executionsession"))
        user.groups.add(group)
    assert client.get(session_url).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        group.permissions.clear()
    assert client.get(session_url).status_code == 403


class SettableClock:
    """Stands in for the ``time`` module of Django's local-memory cache and of
    ``auth_cache`` (each entry carries its deadline), so a test drives expiry."""

    def __init__(self) -> None:
        self.now = time.time()

    def time(self) -> float:
        return self.now


def test_a_change_django_does_not_signal_lasts_at_most_the_timeout(
    viewer, session_url, settings, monkeypatch
):
    from django.core.cache.backends import locmem

    from sessions_app.conf import app_settings

    assert isinstance(caches[app_settings.AUTH_CACHE_ALIAS], locmem.LocMemCache)
    clock = SettableClock()
    monkeypatch.setattr(locmem, "time", clock)
    monkeypatch.setattr(auth_cache, "time", clock)
    settings.SESSIONS_APP = {"AUTH_CACHE_TIMEOUT": 30}
    user, _, client = viewer
    assert client.get(session_url).status_code == 200
    type(user).objects.filter(pk=user.pk).update(is_active=False)  # no signal
    assert client.get(session_url).status_code == 200  # the stated delay
    clock.now += 29.5
    assert client.get(session_url).status_code == 200  # still within it
    clock.now += 1
    assert client.get(session_url).status_code == 401  # and not a moment longer


def test_an_answer_that_races_a_change_is_not_served_after_it():
    """The generation is read before the database is asked, so a change
    committing during the lookup retires the answer being stored."""
    answers = iter(["granted (read before the change)", "refused (read after it)"])

    def lookup_racing_a_change():
        answer = next(answers)
        if answer.startswith("granted"):
            auth_cache.new_generation()  # the change commits while we look up
        return answer

    first = auth_cache.cached("perms", ("user", 1), lookup_racing_a_change)
    second = auth_cache.cached("perms", ("user", 1), lookup_racing_a_change)
    assert first.startswith("granted")
    assert second.startswith("refused")


def test_unknown_tokens_are_looked_up_every_time(session_url):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    for _ in range(2):
        status, queries = queries_of(client, session_url)
        assert (status, queries) == (401, 1)


def test_the_cache_holds_the_generation_and_no_answer(viewer, session_url):
    """Answers stay in the process; the cache holds a random tag (test_agent_keys.py reads every value)."""
    _, _, client = viewer
    assert client.get(session_url).status_code == 200
    cache = caches["default"]
    auth_keys = [key for key in cache._cache if "sessions_app:auth" in key]  # LocMemCache's own store
    assert auth_keys == [cache.make_key(auth_cache.GENERATION_KEY)]
    assert isinstance(cache.get(auth_cache.GENERATION_KEY), str)


def test_requests_still_succeed_when_the_cache_is_down(viewer, session_url, settings, caplog):
    settings.CACHES = {
        **settings.CACHES,
        "down": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://127.0.0.1:9/0",  # discard port: nothing listens
            "OPTIONS": {"socket_connect_timeout": 0.5},
        },
    }
    settings.SESSIONS_APP = {"AUTH_CACHE_ALIAS": "down"}
    _, _, client = viewer
    with caplog.at_level(logging.WARNING, logger="sessions_app.api"):
        assert [client.get(session_url).status_code for _ in range(2)] == [200, 200]
    assert "cache 'down' is unavailable" in caplog.text


def test_a_login_elsewhere_keeps_the_cached_answers(viewer, session_url, django_capture_on_commit_callbacks):
    """Each login saves the user's last_login, which changes no answer."""
    from django.contrib.auth.models import update_last_login

    user, _, client = viewer
    assert queries_of(client, session_url) == (200, 4)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        update_last_login(None, user)
    assert callbacks == []
    assert queries_of(client, session_url) == (200, 1)


# -- answers kept in memory (auth_cache._answers) ------------------------------------------


def counting(answer):
    """A lookup that counts how often the database would be asked."""
    calls = []

    def look_up():
        calls.append(1)
        return answer

    return look_up, calls


def test_an_answer_in_memory_follows_the_cache_generation():
    """Clearing the cache (or losing its generation) retires the answers this process remembers."""
    look_up, calls = counting("granted")
    assert auth_cache.cached("perms", ("user", 2), look_up) == "granted"
    assert auth_cache.cached("perms", ("user", 2), look_up) == "granted"
    assert len(calls) == 1
    caches["default"].clear()
    assert auth_cache.cached("perms", ("user", 2), look_up) == "granted"
    assert len(calls) == 2


def test_an_answer_in_memory_expires_with_its_cache_entry(monkeypatch):
    clock = SettableClock()
    monkeypatch.setattr(auth_cache, "time", clock)
    look_up, calls = counting("granted")
    auth_cache.cached("perms", ("user", 3), look_up)
    clock.now += 29.5
    auth_cache.cached("perms", ("user", 3), look_up)
    assert len(calls) == 1
    clock.now += 1
    auth_cache.cached("perms", ("user", 3), look_up)
    assert len(calls) == 2


def test_the_answers_in_memory_are_bounded(monkeypatch):
    monkeypatch.setattr(auth_cache, "ANSWERS_LIMIT", 3)
    monkeypatch.setattr(auth_cache, "_answers", {})
    for user in range(10):
        look_up, _ = counting(f"answer {user}")
        assert auth_cache.cached("perms", ("user", user), look_up) == f"answer {user}"
        assert len(auth_cache._answers) <= 3
    look_up, calls = counting("answer 9")
    assert auth_cache.cached("perms", ("user", 9), look_up) == "answer 9"  # the newest stays in memory
    assert calls == []


def test_a_generation_set_by_another_process_retires_the_answers_in_memory(settings, redis_server):
    """With a cache shared by processes (Redis), a change elsewhere retires this process's answers."""
    settings.CACHES = {
        **settings.CACHES,
        "shared": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"{redis_server}/12",
        },
    }
    settings.SESSIONS_APP = {"AUTH_CACHE_ALIAS": "shared"}
    caches["shared"].clear()
    look_up, calls = counting("granted")
    auth_cache.cached("perms", ("user", 5), look_up)
    auth_cache.cached("perms", ("user", 5), look_up)
    assert len(calls) == 1
    # Another process: its own connection to the same Redis, a new generation.
    other_process_cache = caches.create_connection("shared")
    other_process_cache.set(auth_cache.GENERATION_KEY, "changed elsewhere", None)
    auth_cache.cached("perms", ("user", 5), look_up)
    assert len(calls) == 2
    caches["shared"].clear()


def test_each_request_gets_a_user_object_of_its_own(viewer):
    """The remembered user is shared by the process; Django caches permissions on a request's user."""
    from rest_framework.test import APIRequestFactory

    from sessions_app.api.authentication import CachedTokenAuthentication

    user, token, _ = viewer
    authentication = CachedTokenAuthentication()
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=f"Token {token.key}")
    first, _ = authentication.authenticate(request)
    assert first.has_perm("sessions_app.view_executionsession")  # fills first's permission cache
    second, second_token = authentication.authenticate(request)
    assert (first.pk, second.pk, second_token.key) == (user.pk, user.pk, token.key)
    assert second is not first
    assert not hasattr(second, "_perm_cache")
