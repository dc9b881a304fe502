"""Run every benchmark in one go and print one table of medians with ratios.

    .venv/bin/python -m benchmarks.run            # full: about 25 minutes on 2 cores
    .venv/bin/python -m benchmarks.run --quick    # about a minute: proves the benchmarks still work

Each part runs in its own process (Django settings are per process), on
SQLite (a file under /tmp) and on PostgreSQL at 127.0.0.1:5432 when it
answers (database ``sessions_bench``, created if missing). Ratios compare
rows measured in this same run: ``vs raw`` against the raw async driver on
the same table and concurrency, ``vs peer`` against django.contrib.sessions'
database backend. Not a test: nothing here asserts; the target lines say
whether each target held in this run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_SERVER = os.environ.get("BENCH_POSTGRES_SERVER", "postgres://postgres@127.0.0.1:5432")


def run_part(module: str, database_url: str, *args: str) -> dict:
    env = {**os.environ, "BENCH_DATABASE_URL": database_url, "PYTHONPATH": str(ROOT)}
    env.pop("DATABASE_URL", None)
    result = subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    sys.stdout.write(
        "".join(line + "\n" for line in result.stdout.splitlines() if not line.startswith("RESULT "))
    )
    if result.returncode != 0:
        raise SystemExit(f"{module} failed:\n{result.stderr[-4000:]}")
    last = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")][-1]
    return json.loads(last.removeprefix("RESULT "))


def postgres_url(database: str = "sessions_bench") -> str | None:
    """The URL of a benchmark database on the PostgreSQL server, created if missing; None if unreachable."""
    try:
        import psycopg

        with psycopg.connect(f"{POSTGRES_SERVER}/postgres", connect_timeout=3, autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone():
                conn.execute(f"CREATE DATABASE {database}")
    except Exception as exc:
        print(f"PostgreSQL skipped: {exc}")
        return None
    return f"{POSTGRES_SERVER}/{database}"


def ratio(value: float, base: float | None) -> str:
    return f"{value / base:5.2f}x" if base else "     -"


def print_store_table(result: dict) -> dict[str, float]:
    rows = {(row["row"], row["concurrency"]): row["ops_per_s"] for row in result["rows"]}
    vendor = result["vendor"]
    peer = rows.get(("django.contrib.sessions db backend cycle", 1))

    def raw_for(concurrency: int) -> float | None:
        pooled = [
            v
            for (name, c), v in rows.items()
            if name.startswith("raw async driver, pool") and c == concurrency
        ]
        if vendor == "postgresql" and concurrency > 1 and pooled:
            return pooled[0]
        return rows.get(("raw async driver cycle", concurrency if vendor == "sqlite" else 1))

    print(f"\n{vendor}: median ops/s (batch rows: records/s)")
    print(f"{'row':52} {'conc':>4} {'ops/s':>10} {'vs raw':>7} {'vs peer':>7}")
    for (name, concurrency), value in rows.items():
        is_cycle = name.endswith("cycle")
        print(
            f"{name:52} {concurrency:>4} {value:>10.0f} "
            f"{ratio(value, raw_for(concurrency) if is_cycle else None):>7} "
            f"{ratio(value, peer if is_cycle and concurrency == 1 else None):>7}"
        )
    store_cycle = next(
        v for (name, c), v in rows.items() if name.startswith("DjangoSessionStore (") and c == 1
    )
    checks = {
        "1. cycle c=1 vs raw async driver (>= 0.9)": store_cycle / raw_for(1),
        "1. cycle c=1 vs django.contrib.sessions (>= 3)": store_cycle / peer,
        "3. save_many vs single saves (>= 10)": rows[next(k for k in rows if k[0].startswith("save_many"))]
        / rows[("DjangoSessionStore save (insert)", 1)],
        "3. load_many vs single loads (>= 10)": rows[next(k for k in rows if k[0].startswith("load_many"))]
        / rows[("DjangoSessionStore load", 1)],
    }
    per_loop = rows.get(("sync code: asyncio.run(store.load()) per call", 1))
    via_sync = rows.get(("sync code: store.sync.load()", 1))
    if per_loop and via_sync:
        print(f"sync code: asyncio.run() per call is {per_loop / via_sync:.2f}x the speed of store.sync")
    top = max(c for (_, c) in rows)
    if vendor == "postgresql" and top > 1:
        store_top = next(
            v for (name, c), v in rows.items() if name.startswith("DjangoSessionStore (") and c == top
        )
        checks[f"2. cycle c={top} vs raw psycopg async pool (>= 0.8)"] = store_top / raw_for(top)
    return {f"{vendor}: {name}": value for name, value in checks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="few cycles, one repetition: a smoke run")
    args = parser.parse_args()
    quick = args.quick
    store_args = ["--cycles", "200", "--repetitions", "1", "--concurrency", "1", "64"]
    store_args = store_args if quick else []
    # Quick mode proves each part runs (the test command runs it): one second
    # a row of the HTTP run is enough for that, 20 rows on each database.
    http_args = ["--seconds", "1", "--repetitions", "1"] if quick else []
    memory_args = ["--cycles", "10000", "--checkpoint", "5000"] if quick else []
    client_args = ["--records", "1000", "--repetitions", "1"] if quick else []

    print(f"machine: {platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    workdir = Path(tempfile.mkdtemp(prefix="sessions-bench-"))
    sqlite_url = f"sqlite:///{workdir / 'bench.sqlite3'}"
    databases = {"sqlite": sqlite_url}
    pg = postgres_url()
    if pg:
        databases["postgresql"] = pg

    checks: dict[str, float] = {}
    for name, url in databases.items():
        print(f"\n== store on {name}")
        checks |= print_store_table(run_part("benchmarks.store_bench", url, *store_args))

    for name, url in databases.items():
        print(f"\n== HTTP API on {name} (uvicorn, wrk, 32 connections)")
        http = run_part("benchmarks.http_bench", url, *http_args)
        if "skipped" in http:
            print(f"skipped: {http['skipped']}")
            continue
        rows = {row["row"]: row for row in http["rows"]}
        bare = rows["bare async view GET"]["requests_per_s"]
        for row in http["rows"]:
            workers = row["row"][row["row"].index(" (") :] if " (" in row["row"] else ""
            same_server_bare = rows[f"bare async view GET{workers}"]["requests_per_s"]
            print(
                f"{row['row']:44} {row['requests_per_s']:8.0f} req/s "
                f"{ratio(row['requests_per_s'], same_server_bare)} of bare (paired {row['vs_bare']:.2f}x)"
                f"  p50 {row['p50_ms']:7.2f} ms  p99 {row['p99_ms']:7.2f} ms  non-2xx {row['non_2xx']}"
            )
        checks[f"{name}: 5. API GET vs bare async view (>= 0.5)"] = (
            rows["API GET /api/sessions/{id}/"]["requests_per_s"] / bare
        )
        for workers in ("", " (2 workers)"):
            # The paired ratio: the median of the API's ratios to the bare
            # view within each repetition (http_bench).
            api_get = rows[f"API GET /api/sessions/{{id}}/{workers}"]
            checks[f"{name}: API GET vs bare async view{workers or ' (1 worker)'}, under ASGI (>= 0.85)"] = (
                api_get["vs_bare"]
            )
            key_get = rows[f"API GET, agent key{workers}"]
            cell = workers or " (1 worker)"
            checks[f"{name}: API GET, agent key vs token{cell} (>= 0.9)"] = key_get["vs_token_get"]

    for name, url in databases.items():
        print(f"\n== remote bulk calls on {name} (HttpSessionStore against uvicorn, vs in-process)")
        bulk = run_part("benchmarks.client_bench", url, *client_args)
        for call in ("save_many", "load_many"):
            checks[f"{name}: remote {call} vs in-process (>= 0.3)"] = bulk["ratio"][call]

    admin_ms: dict[str, float] = {}
    admin_url = postgres_url("sessions_bench_admin") if pg else None
    if admin_url:
        rows_wanted = "20000" if quick else "2000000"
        print(f"\n== admin on PostgreSQL ({int(rows_wanted):,} rows)")
        admin_ms = run_part("benchmarks.admin_bench", admin_url, "--rows", rows_wanted)["median_ms"]

    print("\n== memory (SQLite)")
    memory = run_part("benchmarks.memory_bench", sqlite_url, *memory_args)
    growth = memory["peak_rss_mib_at_end"] - memory["peak_rss_mib_at_checkpoint"]
    print(
        f"peak RSS after {memory['checkpoint']} cycles {memory['peak_rss_mib_at_checkpoint']} MiB, "
        f"after {memory['cycles']} cycles {memory['peak_rss_mib_at_end']} MiB "
        f"({memory['seconds']} s, {memory['path']})"
    )

    print("\n== targets in this run" + (" (quick mode: too few cycles to judge)" if quick else ""))
    for name, value in checks.items():
        wanted = float(name.rsplit(">= ", 1)[1].rstrip(")"))
        print(f"{'met ' if value >= wanted else 'MISS'} {name}: {value:.2f}")
    verdict = "met " if growth <= 10 else "MISS"
    span = f"{memory['checkpoint']}->{memory['cycles']} cycles"
    print(f"{verdict} 4. RSS growth {span} (<= 10 MiB): {growth:.2f} MiB")
    for name, ms in admin_ms.items():
        if not name.startswith("baseline"):
            print(f"{'met ' if ms <= 60 else 'MISS'} admin: {name} (<= 60 ms): {ms:.1f} ms")


if __name__ == "__main__":
    main()
