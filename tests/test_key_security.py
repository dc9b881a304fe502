"""Agent keys in process: revocation and the auth cache, guessing slowed, what the cache holds,
the admin and the management commands.
"""

from __future__ import annotations

import pickle
import time
from datetime import timedelta
from io import StringIO
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import caches
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authentication import TokenAuthentication
from rest_framework.test import APIClient
from rest_framework_api_key.models import APIKey

from sessions_app.api import auth_cache
from sessions_app.api.throttling import AuthFailureThrottle
from sessions_app.models import AgentKey, ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db(transaction=True)

OWN = 42


@pytest.fixture
def key() -> str:
    _, secret = AgentKey.objects.create_key(name="planner", agent_ids=[OWN])
    return secret


@pytest.fixture
def session_url() -> str:
    sid = SessionId.new()
    ExecutionSession.objects.create(session_id=sid, agent_id=OWN, started_at_ns=1)
    return f"/api/sessions/{sid}/"


def key_client(key: str, address: str = "127.0.0.1", **extra: str) -> APIClient:
    client = APIClient(REMOTE_ADDR=address, **extra)
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {key}")
    return client


def queries_of(client: APIClient, url: str) -> tuple[int, int]:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    return response.status_code, len(captured)


# -- the answers kept, and what retires them ------------------------------------------------


def test_a_repeated_key_call_asks_the_database_only_for_the_session(key, session_url):
    client = key_client(key)
    status, first = queries_of(client, session_url)
    assert status == 200 and first >= 2  # the key, last_used, the load
    assert queries_of(client, session_url) == (200, 1)


@pytest.mark.parametrize(
    "change, status",
    [
        (lambda row: setattr(row, "revoked", True) or row.save(), 401),
        (lambda row: AgentKey.objects.filter(pk=row.pk).get().delete(), 401),
        (lambda row: setattr(row, "expiry_date", timezone.now() - timedelta(seconds=1)) or row.save(), 401),
        (lambda row: setattr(row, "scopes", ["write"]) or row.save(), 403),
    ],
    ids=["revoked", "deleted", "expired", "read scope removed"],
)
def test_a_key_changed_through_django_is_refused_on_the_next_request(key, session_url, change, status):
    client = key_client(key)
    assert client.get(session_url).status_code == 200
    change(AgentKey.objects.get(prefix=key.partition(".")[0]))
    assert client.get(session_url).status_code == status


def test_a_revocation_while_the_cache_blinks_is_still_refused_here(key, session_url, monkeypatch):
    """The process that made the change drops its own answers even if the cache refuses the new generation."""
    client = key_client(key)
    assert client.get(session_url).status_code == 200
    cache = caches["default"]
    real_set = type(cache).set

    def refusing_set(self, cache_key, *args, **kwargs):
        if auth_cache.GENERATION_KEY in cache_key:
            raise ConnectionError("the cache blinked")
        return real_set(self, cache_key, *args, **kwargs)

    monkeypatch.setattr(type(cache), "set", refusing_set)
    row = AgentKey.objects.get(prefix=key.partition(".")[0])
    row.revoked = True
    row.save()
    monkeypatch.setattr(type(cache), "set", real_set)
    assert client.get(session_url).status_code == 401


def test_a_key_without_agents_or_scopes_cannot_be_saved_and_a_raw_one_is_refused(session_url):
    from django.core.exceptions import ValidationError

    row = AgentKey(name="empty")
    secret = AgentKey.objects.assign_key(row)
    with pytest.raises(ValidationError) as refused:
        row.save()
    assert "agent_ids" in refused.value.message_dict
    row.agent_ids, row.scopes = [OWN], ["read"]
    row.save()
    AgentKey.objects.filter(pk=row.pk).update(agent_ids=[])  # around the model, as raw SQL would
    answer = key_client(secret).get(session_url)
    assert (answer.status_code, answer.json()) == (401, {"detail": "Invalid API key."})


def test_watching_auth_models_leaves_fast_deletes_to_every_other_model():
    from django.db.models.deletion import Collector

    assert Collector(using="default").can_fast_delete(ExecutionSession.objects.all())


def test_a_key_that_expires_while_kept_is_refused_at_its_expiry(session_url, monkeypatch):
    _, key = AgentKey.objects.create_key(
        name="short", agent_ids=[OWN], expiry_date=timezone.now() + timedelta(seconds=30)
    )
    client = key_client(key)
    assert client.get(session_url).status_code == 200
    from sessions_app.api import authentication

    later = time.time() + 31
    monkeypatch.setattr(authentication, "time", SimpleNamespace(time=lambda: later, monotonic=time.monotonic))
    answer = client.get(session_url)
    assert (answer.status_code, answer.json()) == (401, {"detail": "API key has expired."})


def test_changes_through_a_proxy_model_retire_the_answers(make_user, token_client, session_url):
    from rest_framework.authtoken.admin import TokenProxy

    user, nobody = make_user("view"), make_user(username="nobody")
    client, token = token_client(user)
    assert client.get(session_url).status_code == 200
    # Saved through the proxy (DRF's token admin): the token now belongs to a user without permissions.
    proxied = TokenProxy.objects.get(pk=token.pk)
    proxied.user = nobody
    proxied.save()
    assert client.get(session_url).status_code == 403


def test_changes_through_a_proxy_user_model_retire_the_answers(make_user, token_client, session_url):
    user = make_user("view")
    client, _ = token_client(user)
    assert client.get(session_url).status_code == 200
    proxied = ProxyUser.objects.get(pk=user.pk)
    proxied.is_active = False
    proxied.save()
    assert client.get(session_url).status_code == 401


class ProxyUser(get_user_model()):  # type: ignore[misc]
    """A proxy of the user model, as a project's second user admin would declare."""

    class Meta:
        proxy = True
        app_label = "auth"


# A project's models are all loaded before the app is ready, when the signals are
# connected; this test module defines its proxy later, so it connects them again.
auth_cache.connect_signals()


class CustomTokenAuthentication(TokenAuthentication):
    model = APIKey  # a stand-in: any concrete model a project's token authentication names


def test_a_custom_token_model_of_the_authentication_classes_is_watched(settings):
    from rest_framework.settings import api_settings

    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_AUTHENTICATION_CLASSES": [f"{__name__}.CustomTokenAuthentication"],
    }
    try:
        assert APIKey in auth_cache.watched_models()
        auth_cache.connect_signals()
        before = caches["default"].get(auth_cache.GENERATION_KEY)
        APIKey.objects.create_key(name="custom")
        assert caches["default"].get(auth_cache.GENERATION_KEY) != before
    finally:
        settings.REST_FRAMEWORK = dict(settings.REST_FRAMEWORK)
        api_settings.reload()
        auth_cache.connect_signals()


# -- guessing slowed --------------------------------------------------------------------------


@pytest.fixture
def failure_rate(settings, monkeypatch):
    """Three failures a minute per address, with a settable clock and fresh counts."""
    settings.SESSIONS_APP = {**getattr(settings, "SESSIONS_APP", {}), "AUTH_FAILURE_RATE": "3/min"}
    clock = [time.time()]
    monkeypatch.setattr(AuthFailureThrottle, "timer", lambda self: clock[0])
    caches["default"].clear()
    yield clock
    caches["default"].clear()


def test_an_address_that_fails_too_often_is_refused_without_a_query_until_the_window_passes(
    failure_rate, key, session_url
):
    guesser = key_client(key.partition(".")[0] + ".wrong-secret")
    assert [guesser.get(session_url).status_code for _ in range(3)] == [401, 401, 401]
    # Now even the right key, from that address: 429, and not one query.
    right = key_client(key)
    with CaptureQueriesContext(connection) as captured:
        answer = right.get(session_url)
    assert answer.status_code == 429
    assert len(captured) == 0
    assert 0 < int(answer["Retry-After"]) <= 60
    # Another address is not slowed.
    assert key_client(key, address="127.0.0.2").get(session_url).status_code == 200
    failure_rate[0] += 61
    assert right.get(session_url).status_code == 200


def test_a_forged_forwarded_for_does_not_escape_the_count(failure_rate, key, session_url, settings):
    """NUM_PROXIES is 0: X-Forwarded-For is the client's own word and identifies nobody."""
    for n in range(3):
        forged = key_client("nosuchkey.guess", HTTP_X_FORWARDED_FOR=f"10.0.0.{n}")
        assert forged.get(session_url).status_code == 401
    assert key_client(key, HTTP_X_FORWARDED_FOR="10.0.0.99").get(session_url).status_code == 429


def test_behind_a_declared_proxy_the_forwarded_address_is_the_client(
    failure_rate, key, session_url, settings
):
    from rest_framework.settings import api_settings

    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": 1}
    try:
        for _ in range(3):
            key_client("nosuchkey.guess", HTTP_X_FORWARDED_FOR="203.0.113.5").get(session_url)
        assert key_client(key, HTTP_X_FORWARDED_FOR="203.0.113.5").get(session_url).status_code == 429
        assert key_client(key, HTTP_X_FORWARDED_FOR="203.0.113.6").get(session_url).status_code == 200
    finally:
        api_settings.reload()


def test_bad_tokens_count_too(failure_rate, make_user, token_client, session_url):
    bad = APIClient()
    bad.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    assert [bad.get(session_url).status_code for _ in range(4)] == [401, 401, 401, 429]


def test_guesses_at_any_api_view_count_and_are_refused_there_too(failure_rate, key, session_url):
    """The schema and the metrics authenticate too: guessing there is counted, and refused."""
    guesser = key_client(key.partition(".")[0] + ".wrong-secret")
    assert guesser.get("/api/schema/").status_code == 401
    assert guesser.get("/api/metrics/").status_code == 401
    assert guesser.get(session_url).status_code == 401
    for url in ("/api/schema/", "/api/metrics/", session_url):
        assert key_client(key).get(url).status_code == 429


def test_a_refused_address_asking_for_html_gets_the_429_without_a_query(failure_rate, key, session_url):
    guesser = key_client("nosuchkey.guess", HTTP_ACCEPT="text/html")
    assert [guesser.get(session_url).status_code for _ in range(3)] == [401, 401, 401]
    for credential in ("nosuchkey.guess", key):
        client = key_client(credential, HTTP_ACCEPT="text/html")
        with CaptureQueriesContext(connection) as captured:
            answer = client.get(session_url)
        assert answer.status_code == 429
        assert len(captured) == 0


def test_guesses_sent_at_once_are_each_counted(failure_rate, settings):
    """The count is one integer per address and window, added to atomically."""
    import threading

    from rest_framework.test import APIRequestFactory

    settings.SESSIONS_APP = {**settings.SESSIONS_APP, "AUTH_FAILURE_RATE": "1000/min"}
    throttle = AuthFailureThrottle()
    request = APIRequestFactory().get("/", REMOTE_ADDR="192.0.2.7")
    barrier = threading.Barrier(8)

    def guess() -> None:
        barrier.wait(5)
        for _ in range(25):
            throttle.record_failure(request)

    threads = [threading.Thread(target=guess) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
        assert not thread.is_alive()
    assert throttle.cache.get(throttle._key(request, throttle.timer())) == 200


# -- what the cache holds ------------------------------------------------------------------------


def test_the_cache_holds_nothing_secret_after_authenticated_requests(
    key, session_url, make_user, token_client, failure_rate
):
    user = make_user("view", "add", "change", "delete")
    token_api, token = token_client(user)
    assert token_api.get(session_url).status_code == 200
    assert key_client(key).get(session_url).status_code == 200
    key_client(key.partition(".")[0] + ".wrong").get(session_url)  # a failure is counted in the cache
    user.refresh_from_db()
    secrets = [token.key, key, key.partition(".")[2], user.password]
    values = caches["default"]._cache  # LocMemCache: key -> pickled value
    assert values, "the requests stored nothing: the test would prove nothing"
    for cache_key, pickled in values.items():
        for secret in secrets:
            assert secret not in cache_key
            assert secret.encode() not in pickled
        value = pickle.loads(pickled)
        assert not isinstance(value, get_user_model())
        assert b"django.contrib.auth" not in pickled and b"authtoken" not in pickled


# -- the admin and the commands -----------------------------------------------------------------


def test_the_admin_creates_a_key_showing_it_once_and_lists_and_revokes(admin_client):
    answer = admin_client.post(
        "/admin/sessions_app/agentkey/add/",
        {"name": "from the admin", "agent_ids": "42, 43", "scopes": ["read", "write"]},
        follow=True,
    )
    assert answer.status_code == 200
    row = AgentKey.objects.get(name="from the admin")
    assert (row.agent_ids, row.scopes) == ([42, 43], ["read", "write"])
    shown = [str(message) for message in answer.context["messages"]]
    secret = next(
        word.rstrip(".") for text in shown for word in text.split() if word.startswith(row.prefix + ".")
    )
    assert AgentKey.objects.get_from_key(secret).pk == row.pk
    assert row.hashed_key != secret and secret not in row.hashed_key
    listing = admin_client.get("/admin/sessions_app/agentkey/").content.decode()
    assert row.prefix in listing and "42, 43" in listing and "read, write" in listing
    assert secret not in listing
    change = admin_client.get(f"/admin/sessions_app/agentkey/{row.pk}/change/").content.decode()
    assert secret not in change
    revoked = admin_client.post(
        "/admin/sessions_app/agentkey/", {"action": "revoke", "_selected_action": [row.pk]}, follow=True
    )
    assert revoked.status_code == 200
    assert AgentKey.objects.get(pk=row.pk).revoked


def test_the_admin_refuses_bad_agents_and_no_scope(admin_client):
    answer = admin_client.post(
        "/admin/sessions_app/agentkey/add/", {"name": "bad", "agent_ids": "42, -1", "scopes": []}
    )
    assert answer.status_code == 200  # the form again, with its errors
    errors = answer.context["adminform"].form.errors
    assert set(errors) == {"agent_ids", "scopes"}
    assert not AgentKey.objects.filter(name="bad").exists()


def test_create_agent_key_prints_the_key_last_and_it_works(session_url):
    out = StringIO()
    call_command("create_agent_key", "cli", "--agent", str(OWN), "--scope", "read", stdout=out)
    secret = out.getvalue().strip().splitlines()[-1]
    row = AgentKey.objects.get(prefix=secret.partition(".")[0])
    assert (row.agent_ids, row.scopes, row.expiry_date) == ([OWN], ["read"], None)
    assert key_client(secret).get(session_url).status_code == 200
    assert key_client(secret).delete(session_url).status_code == 403
    call_command("revoke_agent_key", row.prefix, stdout=StringIO())
    assert key_client(secret).get(session_url).status_code == 401


def test_create_agent_key_defaults_to_every_scope_and_takes_an_expiry():
    out = StringIO()
    call_command("create_agent_key", "cli", "--agent", "1", "--agent", "2", "--expires-in", "60", stdout=out)
    row = AgentKey.objects.get(prefix=out.getvalue().strip().splitlines()[-1].partition(".")[0])
    assert (row.agent_ids, row.scopes) == ([1, 2], ["read", "write", "delete"])
    assert timedelta(seconds=50) < row.expiry_date - timezone.now() <= timedelta(seconds=60)


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["x", "--agent", "-1"], "--agent must be an integer"),
        (["x", "--agent", str(2**63)], "agent_ids must be an integer in 0..9223372036854775807"),
        (["x", "--agent", "1", "--expires-in", "0"], "--expires-in must be"),
        (["", "--agent", "1"], "NAME must be"),
    ],
)
def test_create_agent_key_refuses_bad_input_with_a_clear_message(arguments, message):
    from django.core.management import CommandError

    with pytest.raises(CommandError, match=message.replace(".", r"\.")):
        call_command("create_agent_key", *arguments, stdout=StringIO())
    assert not AgentKey.objects.exists()


def test_revoke_agent_key_of_an_unknown_prefix_says_so():
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="no agent key has the prefix 'nosuch'"):
        call_command("revoke_agent_key", "nosuch")
