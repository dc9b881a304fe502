"""The host project's HTTP edge against the peer a user would otherwise pick (issue 19's targets).

Two servers under the same uvicorn settings (``scripts/serve.sh``'s flags:
``--http aa_project.server:ReadTimeoutHttpToolsProtocol --timeout-keep-alive
5 --no-proxy-headers``, access log on as there; one worker, then two):

- the peer, ``benchmarks/peer_app.py``: Starlette over a psycopg pool, the
  same table, the same JSON, a token compared (cached per process);
- the host project, ``aa_project.asgi:application`` with
  ``aa_project.settings`` as ``serve.sh`` serves it, in production mode
  (``DJANGO_DEBUG=0``; no TLS redirect on loopback): authentication,
  permissions, agent scoping, throttling, logging and metrics on. The user
  throttle's rate is raised (``API_THROTTLE_USER``, 1000000/minute unless
  set) so that it is computed for every request but never answers 429.

wrk loads each at 16 and 64 connections (one wrk thread: the machine's
cores go to the servers): ``GET /api/sessions/{id}/`` with a token and with
an agent key (the peer has no agent keys: the project's key GET is
compared with the peer's token GET), ``PUT`` (an upsert of the same record,
200) and ``DELETE`` (of an absent id: a real statement, 204). Rounds
interleave every load of both servers, every other round in reverse order;
a row's ratio is the median of the project/peer ratios within a round, its
rate and p99 the medians over rounds. Targets: GET (token and key) at least
1.0x of the peer, PUT and DELETE at least 0.8x, with one worker.

PostgreSQL: ``BENCH_DATABASE_URL`` (default
``postgres://postgres@127.0.0.1:5432/sessions_bench``, created if missing),
migrated with ``benchmarks.settings``. ``--sqlite``: the project's rows
again on SQLite (a file beside ``manage.py``), paired with the peer on
PostgreSQL in the same rounds (the peer cannot run on SQLite). ``--commit
REV``: the project served from a ``git archive`` of that commit, not from a
working tree that others may be editing.

Every load is bounded by wrk's ``--duration``; only 127.0.0.1 is targeted.
Output: a table, target lines and one ``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/sessions_bench"
CONNECTIONS = (16, 64)
WRK_THREADS = 1
UVICORN_FLAGS = [
    "--http",
    "aa_project.server:ReadTimeoutHttpToolsProtocol",
    "--timeout-keep-alive",
    "5",
    "--no-proxy-headers",
]
# Project row -> (peer row it is compared with, target ratio)
ROWS = {
    "GET, token": ("GET, token", 1.0),
    "GET, agent key": ("GET, token", 1.0),
    "PUT (upsert)": ("PUT (upsert)", 0.8),
    "DELETE": ("DELETE", 0.8),
}
PEER_ROWS = ("GET, token", "PUT (upsert)", "DELETE")
PUT_BODY = json.dumps({"agent_id": 7, "started_at_ns": "18446744073709551615"})


def ensure_postgres_database(url: str) -> None:
    """Create the URL's database on its server if it is missing (as ``benchmarks/run.py`` does)."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    database = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(make_conninfo(url, dbname="postgres"), connect_timeout=3, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
            conn.execute(f'CREATE DATABASE "{database}"')


@dataclass
class Server:
    """One uvicorn process tree and the requests it is loaded with."""

    name: str
    app: str
    env: dict[str, str]
    workers: int
    access_log: bool
    source: Path  # the tree the app is imported from
    targets: dict[str, tuple[str, str, str | None]] = field(
        default_factory=dict
    )  # row -> (url path, auth, body)
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, scratch: Path) -> None:
        from benchmarks.http_bench import free_port

        self.port = free_port()
        self.log = scratch / f"{self.name}-{self.workers}.log"
        args = [sys.executable, "-m", "uvicorn", self.app, "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", str(self.workers), *UVICORN_FLAGS]  # fmt: skip
        if not self.access_log:
            args.append("--no-access-log")
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                args, cwd=self.source, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log and self.log.exists() else ""

    def request(self, path: str, auth: str, method: str = "GET", body: str | None = None) -> tuple[int, Any]:
        req = urllib.request.Request(
            self.base + path,
            data=body.encode() if body is not None else None,
            method=method,
            headers={"Authorization": auth, "Content-Type": "application/json", "Accept": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        return status, json.loads(raw) if raw else None

    def wait_ready(self, timeout: float = 60) -> None:
        """Until every worker could answer: the first target's GET is 200 several times in a row."""
        path, auth, _ = self.targets["GET, token"]
        deadline = time.monotonic() + timeout
        ok = 0
        while ok < 4 * self.workers:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not answer within {timeout}s:\n{self.log_tail()}")
            try:
                status, _ = self.request(path, auth)
            except OSError:
                status = 0
            if status == 200:
                ok += 1
            else:
                ok = 0
                time.sleep(0.2)


def wrk(url: str, authorization: str, connections: int, seconds: int, method: str, body: str | None) -> dict:
    """http_bench's wrk, with this benchmark's thread count; any method but GET sends a body."""
    from benchmarks.http_bench import wrk as load

    body = None if method == "GET" else (body or "")
    return load(url, authorization, seconds, body, method, connections=connections, threads=WRK_THREADS)


def method_of(row: str) -> str:
    return row.split()[0].rstrip(",")


def load(server: Server, row: str, connections: int, seconds: int) -> dict:
    path, auth, body = server.targets[row]
    return wrk(server.base + path, auth, connections, seconds, method_of(row), body)


def check_same_answers(project: Server, peer: Server) -> None:
    """The two servers answer the targets' requests alike (status and JSON), before any load."""
    for row, (peer_row, _) in ROWS.items():
        method = method_of(row)
        theirs = peer.request(
            peer.targets[peer_row][0], peer.targets[peer_row][1], method, peer.targets[peer_row][2]
        )
        ours = project.request(
            project.targets[row][0], project.targets[row][1], method, project.targets[row][2]
        )
        if method != "DELETE" and project.targets[row][0] == peer.targets[peer_row][0]:
            same = ours == theirs
        else:  # a different record (SQLite beside PostgreSQL): the status and the fields' form
            same = ours[0] == theirs[0] and (ours[1] or {}).keys() == (theirs[1] or {}).keys()
        if not same:
            raise SystemExit(f"{row}: project answered {ours}, peer {theirs}")
    if project.targets["GET, token"][0] == peer.targets["GET, token"][0]:
        print("  same answers: every target's status and JSON body equal on both servers", flush=True)
    else:
        print("  same answers: every target's status and JSON fields equal (two databases)", flush=True)


def measure(project: Server, peer: Server, seconds: int, repetitions: int) -> list[dict]:
    loads = [(c, server, row) for c in CONNECTIONS for server, rows in ((peer, PEER_ROWS), (project, ROWS))
             for row in rows]  # fmt: skip
    for _, server, row in loads[: len(loads) // len(CONNECTIONS)]:
        load(server, row, 64, 1)  # warm-up: connections, prepared statements, caches, every worker
    runs: dict[tuple[int, str, str], list[dict]] = {(c, s.name, r): [] for c, s, r in loads}
    for repetition in range(repetitions):
        for connections, server, row in loads if repetition % 2 == 0 else reversed(loads):
            runs[connections, server.name, row].append(load(server, row, connections, seconds))
    rows = []
    for connections in CONNECTIONS:
        for row, (peer_row, target) in ROWS.items():
            ours, theirs = runs[connections, project.name, row], runs[connections, peer.name, peer_row]
            paired = [a["requests_per_s"] / b["requests_per_s"] for a, b in zip(ours, theirs, strict=True)]
            rows.append(
                {
                    "workers": project.workers,
                    "connections": connections,
                    "row": row,
                    "peer_row": peer_row,
                    "project": summary(ours),
                    "peer": summary(theirs),
                    "ratio": statistics.median(paired),
                    "ratios": paired,
                    "target": target,
                }
            )
    return rows


def summary(runs: list[dict]) -> dict:
    median = {
        key: statistics.median(run[key] for run in runs) for key in ("requests_per_s", "p50_ms", "p99_ms")
    }
    return {
        **median,
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
    }


def print_rows(label: str, rows: list[dict]) -> None:
    print(f"\n{label}: median req/s and p99 over rounds; ratio = median of paired project/peer ratios")
    print(f"{'workers':>7} {'conns':>5}  {'project row':16} {'project':>8} {'p99 ms':>8}   "
          f"{'peer row':13} {'peer':>8} {'p99 ms':>8} {'ratio':>7} {'target':>7}  errors")  # fmt: skip
    for r in rows:
        p, q = r["project"], r["peer"]
        errors = p["non_2xx"] + p["socket_errors"] + q["non_2xx"] + q["socket_errors"]
        print(f"{r['workers']:>7} {r['connections']:>5}  {r['row']:16} "
              f"{p['requests_per_s']:8.0f} {p['p99_ms']:8.2f}   "
              f"{r['peer_row']:13} {q['requests_per_s']:8.0f} {q['p99_ms']:8.2f} "
              f"{r['ratio']:6.2f}x {r['target']:6.1f}x  {errors}")  # fmt: skip


def print_targets(label: str, rows: list[dict]) -> bool:
    met_all = True
    for row, (peer_row, target) in ROWS.items():
        mine = [r for r in rows if r["row"] == row]
        cells = ", ".join(f"{r['workers']}w/{r['connections']}c {r['ratio']:.2f}x" for r in mine)
        one_worker = [r for r in mine if r["workers"] == 1]
        met = bool(one_worker) and all(r["ratio"] >= target for r in one_worker)
        met_all &= met
        print(f"TARGET {label} project {row} >= {target:.1f}x of the peer's {peer_row} (one worker): "
              f"{'met' if met else 'MISSED'}  [{cells}]")  # fmt: skip
    return met_all


def project_env(database_url: str, workers: int, scratch: Path, source: Path) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(source),
        "DJANGO_SETTINGS_MODULE": "aa_project.settings",
        "DATABASE_URL": database_url,
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50),
        "DJANGO_SECURE_SSL_REDIRECT": "0",
        "API_THROTTLE_USER": os.environ.get("API_THROTTLE_USER", "1000000/minute"),
    }
    if workers > 1:  # as serve.sh: the workers' metrics added up through a shared directory
        metrics = scratch / f"metrics-{workers}"
        shutil.rmtree(metrics, ignore_errors=True)
        metrics.mkdir()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics)
    return env


def run(
    args: argparse.Namespace, database_url: str, peer_url: str, peer_credentials: dict[str, str]
) -> list[dict]:
    from benchmarks.http_bench import prepare
    from sessions_app.storage import SessionId

    credentials, sid = prepare()
    absent = SessionId.new()
    if not peer_credentials:  # the peer on this same database
        peer_credentials = {"token": credentials["token"], "sid": str(sid)}
    peer_absent = absent if database_url == peer_url else SessionId.new()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        for workers in args.workers:
            env = project_env(database_url, workers, scratch, args.source)
            project = Server(
                "project", "aa_project.asgi:application", env, workers, args.access_log, args.source
            )
            project.targets = {
                "GET, token": (f"/api/sessions/{sid}/", credentials["token"], None),
                "GET, agent key": (f"/api/sessions/{sid}/", credentials["key"], None),
                "PUT (upsert)": (f"/api/sessions/{sid}/", credentials["token"], PUT_BODY),
                "DELETE": (f"/api/sessions/{absent}/", credentials["token"], ""),
            }
            peer_env = {**os.environ, "PYTHONPATH": str(ROOT), "PEER_DATABASE_URL": peer_url}
            peer = Server("peer", "benchmarks.peer_app:app", peer_env, workers, args.access_log, ROOT)
            peer.targets = {
                "GET, token": (f"/api/sessions/{peer_credentials['sid']}/", peer_credentials["token"], None),
                "PUT (upsert)": (
                    f"/api/sessions/{peer_credentials['sid']}/",
                    peer_credentials["token"],
                    PUT_BODY,
                ),
                "DELETE": (f"/api/sessions/{peer_absent}/", peer_credentials["token"], ""),
            }
            try:
                for server in (peer, project):
                    server.start(scratch)
                for server in (peer, project):
                    server.wait_ready()
                # The record as PUT leaves it, on both, before the answers are compared.
                for server, row in ((peer, "PUT (upsert)"), (project, "PUT (upsert)")):
                    path, auth, body = server.targets[row]
                    server.request(path, auth, "PUT", body)
                check_same_answers(project, peer)
                rows += measure(project, peer, args.seconds, args.repetitions)
            finally:
                for server in (project, peer):
                    server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--seconds", type=int, default=5, help="each wrk load (5)")
    parser.add_argument("--repetitions", type=int, default=3, help="interleaved rounds (3)")
    parser.add_argument("--quick", action="store_true", help="1 s loads, one round: proves it runs")
    parser.add_argument("--workers", default="1,2", help="uvicorn worker counts, comma-separated (1,2)")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="both servers without uvicorn's access log (serve.sh keeps it on)")  # fmt: skip
    parser.add_argument("--sqlite", action="store_true", help="also the project's rows on SQLite")
    parser.add_argument(
        "--commit",
        help="serve the project from this commit (a git archive of it) rather than the working tree,"
        " which others may be editing; the peer and the benchmark run from the working tree",
    )
    parser.add_argument("--source", type=Path, default=ROOT, help=argparse.SUPPRESS)
    parser.add_argument("--sqlite-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workers = [int(w) for w in args.workers.split(",")]
    if args.quick:
        args.seconds, args.repetitions = 1, 1
    if shutil.which("wrk") is None:
        print("RESULT " + json.dumps({"skipped": "wrk is not installed (apt-get install wrk)"}))
        return

    if args.sqlite_child:  # the project on SQLite, the peer on PostgreSQL (given by the parent)
        peer_url = os.environ["EDGE_PEER_DATABASE_URL"]
        peer_credentials = {"token": os.environ["EDGE_PEER_TOKEN"], "sid": os.environ["EDGE_PEER_SID"]}
        rows = run(args, os.environ["BENCH_DATABASE_URL"], peer_url, peer_credentials)
        print("RESULT " + json.dumps({"rows": rows}))
        return

    if args.commit:
        sha = subprocess.run(
            ["git", "rev-parse", "--verify", f"{args.commit}^{{commit}}"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        args.source = Path(tempfile.mkdtemp(prefix="edge-bench-src-"))
        atexit.register(shutil.rmtree, args.source, True)
        archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(args.source)], input=archive, check=True)
        print(f"the project served from commit {sha} (git archive in {args.source})", flush=True)
    else:
        sha = "working tree"
    database_url = os.environ.get("BENCH_DATABASE_URL") or DEFAULT_URL
    if not database_url.startswith(("postgres://", "postgresql://")):
        raise SystemExit(
            "BENCH_DATABASE_URL must name a PostgreSQL database: the peer runs on PostgreSQL only"
        )
    ensure_postgres_database(database_url)
    # benchmarks.settings reads it when benchmarks.http_bench is first imported
    os.environ["BENCH_DATABASE_URL"] = database_url
    flags = " ".join(UVICORN_FLAGS) + ("" if args.access_log else " --no-access-log")
    print(f"edge vs peer: {args.seconds} s loads, {args.repetitions} rounds, "
          f"wrk -t{WRK_THREADS} -c{CONNECTIONS}, uvicorn {flags}", flush=True)  # fmt: skip
    print("PostgreSQL: both servers", flush=True)
    rows = run(args, database_url, database_url, {})
    print_rows("PostgreSQL", rows)
    met = print_targets("PostgreSQL", rows)
    result: dict[str, Any] = {
        "seconds": args.seconds,
        "repetitions": args.repetitions,
        "connections": list(CONNECTIONS),
        "access_log": args.access_log,
        "project_source": sha,
        "postgresql": rows,
        "targets_met": met,
    }
    if args.sqlite:
        print("\nSQLite: the project on SQLite, the peer on PostgreSQL", flush=True)
        from benchmarks.http_bench import prepare

        credentials, sid = prepare()  # PostgreSQL again: the peer's token and record
        sqlite_file = ROOT / "bench-edge.sqlite3"
        child = subprocess.run(
            [sys.executable, "-m", "benchmarks.edge_bench", "--sqlite-child", "--seconds", str(args.seconds),
             "--repetitions", str(args.repetitions), "--workers", ",".join(map(str, args.workers)),
             "--source", str(args.source),
             *([] if args.access_log else ["--no-access-log"])],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), "BENCH_DATABASE_URL": f"sqlite:///{sqlite_file}",
                 "EDGE_PEER_DATABASE_URL": database_url, "EDGE_PEER_TOKEN": credentials["token"],
                 "EDGE_PEER_SID": str(sid)},
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        sys.stdout.write(
            "".join(line + "\n" for line in child.stdout.splitlines() if not line.startswith("RESULT "))
        )
        if child.returncode != 0:
            raise SystemExit(f"the SQLite part failed:\n{child.stderr[-4000:]}")
        last = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")][-1]
        sqlite_rows = json.loads(last.removeprefix("RESULT "))["rows"]
        print_rows("SQLite (project) vs PostgreSQL (peer)", sqlite_rows)
        print_targets("SQLite", sqlite_rows)
        result["sqlite"] = sqlite_rows
    print("RESULT " + json.dumps(result))


if __name__ == "__main__":
    main()
