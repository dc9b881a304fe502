"""``GET /api/sessions/``: any query string answers a page, a 400, or a 404 (a cursor it never gave out).

Never a 500: the hypothesis test sends raw query strings, not only the
schema's values (huge numbers, crafted cursors, bytes that are not UTF-8,
repeated and unknown parameters). And the cursor's position is the pair
(start time, session id), so any number of sessions with one start time
page through, each once, in order.
"""

from __future__ import annotations

import base64
import urllib.parse

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

URL = "/api/sessions/"
PARAMETERS = [
    "page_size",
    "cursor",
    "agent_id",
    "started_after_ns",
    "started_before_ns",
    "format",
    "ordering",
]


@pytest.fixture(autouse=True)
def generous_throttle_rates(monkeypatch):
    from django.core.cache import cache
    from rest_framework.throttling import SimpleRateThrottle

    monkeypatch.setattr(
        SimpleRateThrottle, "THROTTLE_RATES", {"anon": "100000/minute", "user": "100000/minute"}
    )
    cache.clear()


def cursor_of(payload: str) -> str:
    return base64.b64encode(payload.encode("latin-1")).decode("ascii")


def get(api, query: str):
    """GET the list with ``query`` as the raw query string (its UTF-8 bytes, as a server passes them on)."""
    return api.get(URL, QUERY_STRING=query.encode("utf-8", "surrogatepass").decode("latin-1"))


def seed(count: int, start_of=lambda n: 1000 + n) -> list[SessionId]:
    ids = [SessionId.new() for _ in range(count)]
    ExecutionSession.objects.bulk_create(
        (
            ExecutionSession(session_id=sid, agent_id=n % 3, started_at_ns=start_of(n))
            for n, sid in enumerate(ids)
        ),
        batch_size=500,
    )
    return ids


# -- every query string: a page, a 400 or a 404 ------------------------------------

numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=4_000, max_value=6_000).map(lambda n: "9" * n),  # past the int-string limit
    st.integers(min_value=4_000, max_value=6_000).map(lambda n: "0" * n + "1"),
    st.sampled_from(["", " 1", "1 ", "1.0", "1e3", "0x10", "+1", "-0", "١٢", "NaN", "2**64", "1_000"]),
)
positions = st.one_of(
    numbers,
    st.text(max_size=40),
    st.tuples(numbers, st.text(alphabet="0123456789abcdefABCDEF.-", max_size=40)).map(".".join),
)
cursor_payloads = st.one_of(
    st.text(max_size=60),
    st.fixed_dictionaries(
        {},
        optional={"o": numbers, "r": numbers | st.text(max_size=5), "p": positions},
    ).map(urllib.parse.urlencode),
)
cursors = st.one_of(
    cursor_payloads.map(lambda payload: cursor_of(payload.encode("utf-8").decode("latin-1"))),
    st.text(max_size=60),
)
values = st.one_of(numbers, cursors, st.text(max_size=30))
pairs = st.tuples(st.sampled_from(PARAMETERS) | st.text(max_size=10), values)


def encode_pair(pair: tuple[str, str], quoted: bool) -> str:
    key, value = pair
    return urllib.parse.urlencode({key: value}) if quoted else f"{key}={value}"


query_strings = st.one_of(
    st.lists(st.tuples(pairs, st.booleans()), max_size=6).map(
        lambda items: "&".join(encode_pair(pair, quoted) for pair, quoted in items)
    ),
    st.text(max_size=80),  # anything at all, '%', '&', '=' and ';' included
    st.text(alphabet="%&=;+?#0123456789abcdefp_", max_size=80),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(query=query_strings)
@example(query="page_size=" + "9" * 5000)
@example(query="page_size=" + "0" * 5000 + "7")
@example(query="cursor=" + cursor_of("p=abc"))
@example(query="cursor=" + cursor_of(f"p={2**64}"))
@example(query="cursor=" + cursor_of("p=" + "9" * 5000))
@example(query="cursor=" + cursor_of("o=" + "9" * 5000))
@example(query="cursor=" + cursor_of("p=5." + "g" * 32))
@example(query="agent_id=" + "9" * 5000)
@example(query="started_after_ns=" + "9" * 5000)
@example(query="page_size=%ff%fe")
def test_any_query_string_answers_a_page_a_400_or_a_404(api, query):
    response = get(api, query)
    assert response.status_code in (200, 400, 404), (
        query[:200],
        response.status_code,
        response.content[:300],
    )
    if response.status_code == 404:  # only what the docs say: a cursor or a format it never gave out
        assert "cursor" in query or "format" in query, (query[:200], response.content[:300])


def test_a_page_size_past_the_int_string_limit_gives_the_maximum(api, settings):
    settings.SESSIONS_APP = {"MAX_PAGE_SIZE": 3}
    seed(5)
    response = get(api, "page_size=" + "9" * 5000)
    assert response.status_code == 200
    assert len(response.json()["results"]) == 3


@pytest.mark.parametrize("payload", ["p=abc", f"p={2**64}", "p=1.xyz", "p=" + "9" * 5000, "o=" + "9" * 5000])
def test_a_crafted_cursor_is_a_404(api, payload):
    seed(2)
    response = get(api, "cursor=" + urllib.parse.quote(cursor_of(payload)))
    assert response.status_code == 404
    assert response.json() == {"detail": "Invalid cursor"}


def test_a_cursor_of_the_time_alone_still_pages(api):
    """Cursors handed out before the id joined the position hold the start time alone."""
    seed(6)
    page = get(api, "cursor=" + urllib.parse.quote(cursor_of("p=1003"))).json()
    assert [item["started_at_ns"] for item in page["results"]] == ["1002", "1001", "1000"]


# -- ties: more sessions with one start time than a page holds ---------------------


@pytest.mark.django_db(transaction=True)
def test_five_thousand_sessions_with_one_start_time_page_through_completely_in_order(api, settings):
    settings.SESSIONS_APP = {"MAX_PAGE_SIZE": 1000}
    ids = seed(5000, start_of=lambda n: 7)
    expected = [str(sid) for sid in sorted(ids, reverse=True)]  # newest first, then the id descending

    seen: list[str] = []
    page = get(api, "page_size=1000").json()
    pages = [page]
    while page["next"]:
        page = api.get(page["next"]).json()
        pages.append(page)
    for page in pages:
        seen += [item["session_id"] for item in page["results"]]
    assert len(seen) == len(set(seen)) == 5000
    assert seen == expected

    # And back again from the last page, by the previous links.
    page = pages[-1]
    back = [item["session_id"] for item in page["results"]]
    while page["previous"]:
        page = api.get(page["previous"]).json()
        back = [item["session_id"] for item in page["results"]] + back
    assert back == expected


def test_pages_mixing_ties_and_distinct_times_cover_everything_once_in_order(api):
    ids = seed(37, start_of=lambda n: 1000 + n % 4)
    records = {str(sid): 1000 + n % 4 for n, sid in enumerate(ids)}
    expected = sorted(records, key=lambda sid: (records[sid], SessionId.parse(sid)), reverse=True)
    seen: list[str] = []
    page = get(api, "page_size=5").json()
    seen += [item["session_id"] for item in page["results"]]
    while page["next"]:
        page = api.get(page["next"]).json()
        seen += [item["session_id"] for item in page["results"]]
    assert seen == expected
