"""Several OS processes hammering shared ids, through the store and through the HTTP API."""

import concurrent.futures
import json
import os
import subprocess
import sys

import pytest

from sessions_app.models import ExecutionSession
from sessions_app.storage import SessionId

from .servers import ROOT, subprocess_database_url, uvicorn_server

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

PROCESSES = 4
IDS = 120


def run_phases(ids_file, operations: int, extra: list[str]) -> tuple[list[dict], list[dict]]:
    """The mixed phase in every process, then (once all of them are done) the final phase.

    Each process runs both (``--then-final``): it prints its mixed report,
    waits for a line on stdin, runs its final operations and prints that
    report. Two phases, one start-up of Python and Django per process.
    """
    env = {
        **os.environ,
        "DATABASE_URL": subprocess_database_url(),
        "DJANGO_SETTINGS_MODULE": "aa_project.settings",
    }
    base = [
        sys.executable,
        "-m",
        "tests.concurrency_worker",
        "--processes",
        str(PROCESSES),
        "--ids-file",
        ids_file,
        "--operations",
        str(operations),
        "--then-final",
        *extra,
    ]
    workers = [
        subprocess.Popen(
            [*base, "--index", str(i)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(PROCESSES)
    ]
    readers = concurrent.futures.ThreadPoolExecutor(PROCESSES)
    try:
        reports = [readers.submit(report_line, worker) for worker in workers]
        mixed = [report.result(timeout=600) for report in reports]
        for worker in workers:  # every mixed phase has ended: the final phases may start
            assert worker.stdin is not None
            worker.stdin.write("final\n")
            worker.stdin.flush()
        final = []
        for worker in workers:
            out, _ = worker.communicate(timeout=600)
            assert worker.returncode == 0
            final.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for worker in workers:  # a failure above: no process outlives the test
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        readers.shutdown()
    return mixed, final


def report_line(worker: subprocess.Popen[str]) -> dict:
    """The next JSON report a worker prints (it ends first: a failure)."""
    assert worker.stdout is not None
    while line := worker.stdout.readline():
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"a worker ended without its report (exit status {worker.wait()})")


def check_outcome(ids: list[str], mixed: list[dict], final: list[dict]) -> int:
    errors = [error for report in mixed + final for error in report["errors"]]
    assert errors == [], errors[:5]
    written: dict[str, set] = {}
    for report in mixed + final:
        for sid, values in report["written"].items():
            written.setdefault(sid, set()).update(map(tuple, values))
    for report in mixed:
        for sid, values in report["read"].items():
            assert set(map(tuple, values)) <= written[sid], f"{sid} read a value nobody wrote"

    expected = {sid: value for report in final for sid, value in report["final"].items()}
    assert set(expected) == set(ids)
    stored = {
        str(SessionId(pk)).replace("-", ""): (agent, start)
        for pk, agent, start in ExecutionSession.objects.values_list(
            "session_id", "agent_id", "started_at_ns"
        )
    }
    survivors = {sid: tuple(value) for sid, value in expected.items() if value is not None}
    assert stored == survivors  # each id holds its last writer's value, or nothing after a final delete
    for sid, value in stored.items():
        assert value in written[sid]
    return sum(report["operations"] for report in mixed + final)


@pytest.fixture
def ids_file(tmp_path):
    ids = [SessionId.new().hex() for _ in range(IDS)]
    path = tmp_path / "ids.txt"
    path.write_text("\n".join(ids))
    return str(path), ids


def test_four_processes_through_the_store_lose_nothing(ids_file):
    path, ids = ids_file
    mixed, final = run_phases(path, operations=3000, extra=[])
    operations = check_outcome(ids, mixed, final)
    assert operations == PROCESSES * 3000 + IDS


def test_four_processes_through_the_http_api_see_no_5xx_and_lose_nothing(ids_file, make_user):
    from rest_framework.authtoken.models import Token

    path, ids = ids_file
    token = Token.objects.create(user=make_user("view", "add", "change", "delete", username="load")).key
    with uvicorn_server(subprocess_database_url()) as base:
        extra = ["--http", base, "--token", token]
        mixed, final = run_phases(path, operations=400, extra=extra)
    operations = check_outcome(ids, mixed, final)
    assert operations == PROCESSES * 400 + IDS
