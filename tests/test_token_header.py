"""``CachedTokenAuthentication`` reads the common ``Authorization`` header itself; every outcome is DRF's.

Its shortcut (``Token <key>`` read from ``META``) must give exactly what
DRF's ``TokenAuthentication`` gives for every header: the same user, the
same ``None`` (not this scheme) or the same refusal with the same message.
One exception, on purpose: a key with a NUL character, which PostgreSQL
refuses to look up (DRF then fails with a database error, a 500), is
refused as an invalid token.
"""

import pytest
from django.db import DatabaseError, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import exceptions
from rest_framework.authentication import TokenAuthentication
from rest_framework.test import APIRequestFactory

from sessions_app.api.authentication import CachedTokenAuthentication

pytestmark = pytest.mark.django_db

KEY = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(autouse=True)
def no_failure_limit(settings):
    """Hundreds of refused headers from one address: the failed-auth limit is another test's subject."""
    settings.SESSIONS_APP = {**getattr(settings, "SESSIONS_APP", {}), "AUTH_FAILURE_RATE": None}


@pytest.fixture
def known_token(make_user):
    from rest_framework.authtoken.models import Token

    return Token.objects.create(user=make_user("view", username="header-user"), key=KEY)


def outcome(authentication, header):
    request = APIRequestFactory().get("/", HTTP_AUTHORIZATION=header)
    try:
        with transaction.atomic():  # a database error must not break the test's transaction
            found = authentication.authenticate(request)
    except exceptions.AuthenticationFailed as refusal:
        return ("refused", str(refusal.detail))
    except DatabaseError:
        return ("database error",)
    return None if found is None else ("user", found[0].pk, found[1].key)


def drfs_outcome(header):
    """DRF's outcome, but a key the database cannot look up is an invalid token (see above)."""
    found = outcome(TokenAuthentication(), header)
    return ("refused", "Invalid token.") if found == ("database error",) else found


KEYWORDS = st.sampled_from(["Token", "token", "TOKEN", "Bearer", "Tok", "", "Tokenx"])
SEPARATORS = st.sampled_from([" ", "  ", "\t", " \t", "\n", ""])
# A header reaches Django decoded as latin-1, so every character is one of its.
KEYS = st.one_of(
    st.just(KEY),
    st.just(KEY.upper()),
    st.just(KEY + " extra"),
    st.just(KEY + "\x00"),
    st.just("é" + KEY[1:]),
    st.text(alphabet=st.characters(codec="latin-1"), max_size=45),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    keyword=KEYWORDS,
    separator=SEPARATORS,
    key=KEYS,
    prefix=st.sampled_from(["", " "]),
    suffix=st.sampled_from(["", " ", "\t", "\n", "\r\n", "\x0b", "\x0c", "\x85", "\xa0"]),
)
def test_every_header_gets_drfs_answer(known_token, keyword, separator, key, prefix, suffix):
    header = prefix + keyword + separator + key + suffix
    assert outcome(CachedTokenAuthentication(), header) == drfs_outcome(header)


def test_the_common_header_authenticates(known_token):
    assert outcome(CachedTokenAuthentication(), f"Token {KEY}") == ("user", known_token.user.pk, KEY)


@pytest.mark.parametrize("key", [KEY + "\x00", "\x00", KEY[:20] + "\x00" + KEY[20:]])
def test_a_key_with_nul_is_401_not_500(known_token, key):
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.get("/api/sessions/")
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid token."})
