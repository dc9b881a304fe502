"""The admin: list, search, add, change, delete and history, for ids that break naive URL quoting."""

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, DELETION, LogEntry
from django.urls import reverse

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

pytestmark = pytest.mark.django_db

AWKWARD_IDS = {
    "zeros": b"\x00" * 16,
    "ones": b"\xff" * 16,
    "slash": b"/" * 16,
    "underscore": b"_" * 16,
    "colon": b":" * 16,
    "mixed": b"\x00\xff/_:" * 3 + b"\x2f",
}


@pytest.fixture
def staff(admin_client):
    return admin_client


def change_url(sid) -> str:
    return reverse("admin:sessions_app_executionsession_change", args=[str(SessionId(sid))])


@pytest.mark.parametrize("raw", AWKWARD_IDS.values(), ids=AWKWARD_IDS.keys())
def test_changelist_links_open_the_change_page(staff, raw):
    ExecutionSession.objects.create(session_id=raw, agent_id=5, started_at_ns=2**64 - 1)
    page = staff.get(reverse("admin:sessions_app_executionsession_changelist"))
    assert page.status_code == 200
    text = page.content.decode()
    assert str(SessionId(raw)) in text
    assert change_url(raw) in text
    assert "2554-07-21T23:34:33.709551Z" in text  # 2**64-1 ns as UTC
    assert "18446744073709551615" in text


@pytest.mark.parametrize("raw", AWKWARD_IDS.values(), ids=AWKWARD_IDS.keys())
def test_change_page_edits_and_logs(staff, raw):
    ExecutionSession.objects.create(session_id=raw, agent_id=5, started_at_ns=7)
    page = staff.get(change_url(raw))
    assert page.status_code == 200
    assert str(SessionId(raw)) in page.content.decode()
    response = staff.post(change_url(raw), {"agent_id": "6", "started_at_ns": str(2**64 - 1)})
    assert response.status_code == 302, response.content.decode()[:2000]
    obj = ExecutionSession.objects.get(pk=raw)
    assert (obj.agent_id, obj.started_at_ns) == (6, 2**64 - 1)
    entry = LogEntry.objects.get(action_flag=CHANGE)
    assert entry.object_id == str(SessionId(raw))
    assert entry.get_admin_url() == change_url(raw)


@pytest.mark.parametrize("raw", AWKWARD_IDS.values(), ids=AWKWARD_IDS.keys())
def test_history_page_lists_the_changes(staff, raw):
    ExecutionSession.objects.create(session_id=raw, agent_id=5, started_at_ns=7)
    staff.post(change_url(raw), {"agent_id": "6", "started_at_ns": "8"})
    history = staff.get(reverse("admin:sessions_app_executionsession_history", args=[str(SessionId(raw))]))
    assert history.status_code == 200
    assert "Changed Agent id" in history.content.decode()


@pytest.mark.parametrize("raw", AWKWARD_IDS.values(), ids=AWKWARD_IDS.keys())
def test_delete_page_deletes_only_that_session(staff, raw):
    ExecutionSession.objects.create(session_id=raw, agent_id=5, started_at_ns=7)
    other = ExecutionSession.objects.create(agent_id=5, started_at_ns=7)
    delete_url = reverse("admin:sessions_app_executionsession_delete", args=[str(SessionId(raw))])
    assert staff.get(delete_url).status_code == 200
    assert staff.post(delete_url, {"post": "yes"}).status_code == 302
    assert list(ExecutionSession.objects.values_list("pk", flat=True)) == [other.pk]
    assert LogEntry.objects.get(action_flag=DELETION).object_id == str(SessionId(raw))


def test_add_form_offers_a_fresh_uuid_and_creates_from_text(staff):
    add_url = reverse("admin:sessions_app_executionsession_add")
    page = staff.get(add_url)
    assert page.status_code == 200
    offered = page.context["adminform"].form["session_id"].value()
    assert SessionId.parse(str(offered)).uuid.version == 4
    sid = SessionId.new()
    response = staff.post(
        add_url, {"session_id": sid.hex().upper(), "agent_id": "3", "started_at_ns": str(2**63)}
    )
    assert response.status_code == 302
    assert ExecutionSession.objects.get(pk=sid).started_at_ns == 2**63
    assert LogEntry.objects.get(action_flag=ADDITION).object_id == str(sid)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("session_id", "not-a-uuid", "Enter a session id as a UUID"),
        ("agent_id", "-1", "greater than or equal to 0"),
        ("agent_id", str(2**63), "less than or equal to 9223372036854775807"),
        ("started_at_ns", str(2**64), "less than or equal to 18446744073709551615"),
        ("started_at_ns", "-1", "greater than or equal to 0"),
    ],
)
def test_add_form_rejects_bad_values_with_clear_messages(staff, field, value, message):
    data = {"session_id": str(SessionId.new()), "agent_id": "1", "started_at_ns": "1", field: value}
    response = staff.post(reverse("admin:sessions_app_executionsession_add"), data)
    assert response.status_code == 200
    assert message in " ".join(response.context["adminform"].form.errors[field])
    assert ExecutionSession.objects.count() == 0


def test_change_form_shows_the_full_ns_value_in_a_text_input(staff):
    obj = ExecutionSession.objects.create(agent_id=1, started_at_ns=2**64 - 1)
    text = staff.get(change_url(obj.pk)).content.decode()
    assert 'type="text" name="started_at_ns" value="18446744073709551615"' in text


def test_adding_an_existing_id_is_a_form_error_not_an_overwrite(staff):
    obj = ExecutionSession.objects.create(agent_id=1, started_at_ns=1)
    data = {"session_id": str(obj.pk), "agent_id": "2", "started_at_ns": "2"}
    response = staff.post(reverse("admin:sessions_app_executionsession_add"), data)
    assert response.status_code == 200
    assert "already exists" in response.content.decode()
    assert ExecutionSession.objects.get(pk=obj.pk).agent_id == 1


def test_search_by_full_and_partial_id_and_by_agent(staff):
    target = ExecutionSession.objects.create(
        session_id=SessionId.parse("0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f0"), agent_id=77, started_at_ns=1
    )
    ExecutionSession.objects.create(session_id=b"\xff" * 16, agent_id=5, started_at_ns=2)
    changelist = reverse("admin:sessions_app_executionsession_changelist")

    def found(term: str) -> list:
        return [obj.pk for obj in staff.get(changelist, {"q": term}).context["cl"].result_list]

    for term in [
        str(target.pk),
        target.pk.hex(),
        str(target.pk).upper(),
        "4b5a-4978",
        "4b5a4978",
        "A4B3C2D1",
        "0f1e",
        "id:8695",  # digits only: part of an id when asked for with id:
        "77",
    ]:
        assert found(term) == [target.pk], term
    assert found("8695") == []  # digits alone are an agent id, looked up by index, never a scan
    assert found("ffff") == [b"\xff" * 16]
    assert found("zzz") == []
    assert found("9" * 20) == []  # above the agent id range: nothing, not an error
    assert len(found("")) == 2


def test_the_search_help_says_which_terms_scan_the_table(staff):
    page = staff.get(reverse("admin:sessions_app_executionsession_changelist")).content.decode()
    assert "scans the whole table" in page


@pytest.mark.parametrize("now", ["2026-11-25T23:59:59.999999+00:00", "2026-11-26T00:00:00+00:00"])
def test_filter_by_start_date_uses_utc_days_on_either_side_of_midnight(staff, monkeypatch, now):
    from datetime import datetime

    import sessions_app.admin

    moment = datetime.fromisoformat(now)
    monkeypatch.setattr(sessions_app.admin, "utc_now", lambda: moment)
    midnight = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    ns = int(midnight.timestamp()) * 10**9
    ExecutionSession.objects.create(agent_id=1, started_at_ns=ns)  # the first instant of the day
    ExecutionSession.objects.create(agent_id=2, started_at_ns=ns - 1)  # the last of the day before
    ExecutionSession.objects.create(agent_id=3, started_at_ns=0)
    changelist = reverse("admin:sessions_app_executionsession_changelist")

    def agents(**query: str) -> list[int]:
        return [obj.agent_id for obj in staff.get(changelist, query).context["cl"].result_list]

    assert agents(started="today") == [1]
    assert agents(started="7d") == [1, 2]
    assert agents() == [1, 2, 3]  # newest first


def test_a_large_table_shows_an_estimated_count_and_says_so(staff, monkeypatch):
    from django.db import connection

    import sessions_app.admin

    ExecutionSession.objects.bulk_create(
        ExecutionSession(session_id=SessionId.new(), agent_id=n, started_at_ns=n) for n in range(30)
    )
    changelist = reverse("admin:sessions_app_executionsession_changelist")
    monkeypatch.setattr(sessions_app.admin, "ESTIMATE_COUNT_ABOVE", 10)
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE sessions_app_executionsession")
    response = staff.get(changelist)
    estimated = connection.vendor == "postgresql"
    assert response.context["cl"].paginator.estimated is estimated
    assert ("the total is PostgreSQL's estimate" in response.content.decode()) is estimated
    assert response.context["cl"].result_count == 30  # ANALYZE counted them all; elsewhere COUNT(*)
    filtered = staff.get(changelist, {"q": "7"})
    assert filtered.context["cl"].paginator.estimated is False  # a filtered list is counted exactly
