"""The admin's change list on a large table: ``python -m benchmarks.admin_bench --rows 2000000``.

Fills the table (PostgreSQL by ``BENCH_DATABASE_URL``; rows made by the
server with ``generate_series``, so filling 2,000,000 takes seconds), then
times, through Django's test client with a logged-in superuser, the pages
issue 12 names: the change list's first and 20th page, a search by agent
id and one by whole session id. Beside them, in the same run, the baseline:
the admin's index page, which touches no session row. Medians of
``--repetitions`` requests each; the target is at most 60 ms a page.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")

import django

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from sessions_app.models import ExecutionSession  # noqa: E402
from sessions_app.storage.types import encode_unsigned  # noqa: E402

BASE_NS = 1_700_000_000 * 10**9
AGENTS = 50_000


def fill(rows: int) -> None:
    """Exactly ``rows`` sessions: ids are md5 of the row number, agents cycle, one start a microsecond."""
    table = ExecutionSession._meta.db_table
    have = ExecutionSession.objects.count()
    if have == rows:
        return
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {table}")
        cursor.execute(
            f"INSERT INTO {table} (session_id, agent_id, started_at_ns) "
            "SELECT decode(md5(i::text), 'hex'), i %% %s, %s + i::bigint * 1000 "
            "FROM generate_series(1, %s) AS i",
            [AGENTS, encode_unsigned(BASE_NS), rows],
        )
        cursor.execute(f"VACUUM ANALYZE {table}")  # the planner's statistics and the row estimate
    print(f"filled {rows} rows in {time.perf_counter() - started:.1f} s", flush=True)


def median_ms(client: Client, url: str, repetitions: int, expect: str | None = None) -> float:
    response = client.get(url)  # warm: templates, the plan cache
    assert response.status_code == 200, (url, response.status_code)
    if expect is not None:
        assert expect in response.content.decode(), (url, expect)
    samples = []
    for _ in range(repetitions):
        started = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repetitions", type=int, default=15)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        raise SystemExit("the admin benchmark runs on PostgreSQL (BENCH_DATABASE_URL)")
    call_command("migrate", verbosity=0)
    fill(args.rows)
    user_model = get_user_model()
    admin, _ = user_model.objects.get_or_create(
        username="bench-admin", defaults={"is_superuser": True, "is_staff": True}
    )
    client = Client(SERVER_NAME="127.0.0.1")  # an allowed host of the benchmark settings
    client.force_login(admin)

    changelist = "/admin/sessions_app/executionsession/"
    # A session in the middle of the table, and an agent's id.
    middle = ExecutionSession.objects.order_by().filter(started_at_ns__gte=BASE_NS + args.rows * 500).first()
    assert middle is not None
    timings = {
        "baseline: admin index page": median_ms(client, "/admin/", args.repetitions),
        "change list, first page": median_ms(client, changelist, args.repetitions),
        "change list, 20th page": median_ms(client, changelist + "?p=20", args.repetitions),
        "search by agent id": median_ms(
            client, f"{changelist}?q={middle.agent_id}", args.repetitions, str(middle.pk)
        ),
        "search by whole session id": median_ms(
            client, f"{changelist}?q={middle.pk}", args.repetitions, str(middle.pk)
        ),
    }
    base = timings["baseline: admin index page"]
    print(f"\nadmin on PostgreSQL, {args.rows:,} rows: median of {args.repetitions} requests")
    for name, ms in timings.items():
        verdict = (
            ""
            if name.startswith("baseline")
            else ("  (target <= 60 ms: met)" if ms <= 60 else "  (target <= 60 ms: MISSED)")
        )
        print(f"  {name:32} {ms:8.1f} ms  {ms / base:5.2f}x baseline{verdict}")
    print("RESULT " + json.dumps({"rows": args.rows, "median_ms": timings}))


if __name__ == "__main__":
    main()
