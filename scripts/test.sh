#!/usr/bin/env bash
# Install everything and run the whole test suite: lint; the tests on
# SQLite, PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) with
# Django 5.2 on Python 3.11; the wheel in a fresh project; Django 6.1 on
# Python 3.12 and 3.13 on SQLite and PostgreSQL (noxfile.py); the benchmarks
# in quick mode; the chaos run in quick mode. Extra arguments go to every
# pytest run.
#
# Each pytest run spreads over PYTEST_WORKERS processes (pytest-xdist,
# default 2; 0 runs in this process), each with a test database of its own.
# The runs (the seven cells of the matrix), the quick benchmarks and the
# quick chaos run go side by side, TEST_JOBS at a time (default 2; 1 runs
# them one after another): a run waiting on a server, a timeout or a
# subprocess leaves a core to the other. Never two that use PostgreSQL at
# once (their servers' pools share its 100 connections); the others yield
# them the CPU (nice). Each run has its own test databases (named after the
# cell and this checkout) and its own Redis (tests/conftest.py); a run's
# output is shown when it ends.
#
# With CI set (.ci/run sets CI=true), whatever the suite expects on this
# machine (PostgreSQL, MariaDB, Redis, pgbouncer, node, chromium, wrk) and
# cannot reach or install fails the run with a message saying what is
# missing; elsewhere a missing database server is skipped with a note, and
# the tests that need a missing tool say they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
CI="${CI:-}"
# Bytecode caches on, whatever the environment says: with
# PYTHONDONTWRITEBYTECODE set, every Python process of the suite (pytest,
# its workers, each uvicorn and worker process the tests start) compiles the
# project's modules again, and pytest rewrites the asserts of every plugin's
# modules again (some 400 modules, 1.5 s of CPU a pytest process).
unset PYTHONDONTWRITEBYTECODE

started=$SECONDS
phase_names=()
phase_seconds=()
phase_start=$SECONDS
phase_name=""
phase() {
  if [ -n "$phase_name" ]; then
    phase_names+=("$phase_name")
    phase_seconds+=($((SECONDS - phase_start)))
  fi
  phase_name="$1"
  phase_start=$SECONDS
  [ -n "$phase_name" ] && echo "== $phase_name"
  return 0
}
fail() {
  echo "test: FAILED: $*" >&2
  exit 1
}

# Background work still running, and the scratch directory of the runs' logs
# and SQLite files: ended and removed however this script ends.
scratch="$(mktemp -d /tmp/sessions-test-XXXXXX)"
cleanup() {
  local running
  running="$(jobs -pr)"
  [ -z "$running" ] || kill $running 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

phase "install (bootstrap.sh, install-system-packages.sh)"
bash scripts/bootstrap.sh
if ! bash scripts/install-system-packages.sh; then
  [ -n "$CI" ] && fail "CI is set and the system packages could not be installed (scripts/install-system-packages.sh)"
  echo "test: system packages missing; the tests that need them and the HTTP benchmark will say they skipped"
fi

PY=.venv/bin/python
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
# ssl_disabled: PyMySQL (1.2) otherwise builds a TLS context for every connection, to
# offer TLS the server may take: it loads the CA bundle, 17 ms of CPU, and the
# host project connects per request (CONN_MAX_AGE 0). The server here has no TLS.
MARIADB_URL="${MARIADB_URL:-mysql://root@127.0.0.1:3306/test?ssl_disabled=true}"
WORKERS="${PYTEST_WORKERS:-2}"
JOBS="${TEST_JOBS:-2}"
OTHERS_NICE="${TEST_OTHERS_NICE:-5}"
XDIST=()
# tests/conftest.py schedules them: a few modules whole on one worker, the
# rest test by test to whichever worker is free.
[ "$WORKERS" != "0" ] && XDIST=(-n "$WORKERS")
# `wait -n -p` (which of the runs ended) is bash 5.1's.
if [ "${BASH_VERSINFO[0]}" -lt 5 ] || { [ "${BASH_VERSINFO[0]}" -eq 5 ] && [ "${BASH_VERSINFO[1]}" -lt 1 ]; }; then
  JOBS=1
fi

# The Django 6.1 cells' virtualenvs (noxfile.py: only checked when made for
# this checkout) and the TypeScript client's packages, while lint runs.
installs_log="$scratch/installs.log"
(
  status=0
  for cell in "tests(py3.12-django6.1)" "tests(py3.13-django6.1)"; do
    .venv/bin/nox --install-only -s "$cell" >"$scratch/nox-install-$cell.log" 2>&1 &
  done
  if command -v npm >/dev/null 2>&1 && [ ! -x tests/ts_client/node_modules/.bin/tsc ]; then
    (cd tests/ts_client && npm ci --no-audit --no-fund --loglevel=error) >"$scratch/npm.log" 2>&1 || status=1
  fi
  for job in $(jobs -p); do wait "$job" || status=1; done
  exit "$status"
) >"$installs_log" 2>&1 &
installs_pid=$!

postgres_reachable() {
  $PY - "$POSTGRES_URL" <<'PYEOF'
import sys
import psycopg
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://", 1), connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL at {sys.argv[1]} is not reachable: {exc}")
    sys.exit(1)
PYEOF
}
mariadb_reachable() {
  $PY - "$MARIADB_URL" <<'PYEOF'
import sys
from urllib.parse import urlsplit
import pymysql
url = urlsplit(sys.argv[1])
try:
    pymysql.connect(host=url.hostname or "127.0.0.1", port=url.port or 3306, user=url.username or "root",
                    password=url.password or "", connect_timeout=3).close()
except Exception as exc:
    print(f"MariaDB at {url.hostname}:{url.port or 3306} is not reachable: {exc}")
    raise SystemExit(1)
PYEOF
}
redis_reachable() {
  $PY - <<'PYEOF'
import redis
try:
    redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=3).ping()
except Exception as exc:
    print(f"Redis at 127.0.0.1:6379 is not reachable: {exc}")
    raise SystemExit(1)
PYEOF
}

phase "what this machine has"
have_postgres=yes
have_mariadb=yes
postgres_reachable || have_postgres=""
mariadb_reachable || have_mariadb=""
if [ -n "$CI" ]; then
  absent=()
  [ -n "$have_postgres" ] || absent+=("PostgreSQL ($POSTGRES_URL)")
  [ -n "$have_mariadb" ] || absent+=("MariaDB ($MARIADB_URL)")
  redis_reachable || absent+=("Redis (127.0.0.1:6379)")
  for tool in pgbouncer node npm chromium chromedriver wrk redis-server; do
    command -v "$tool" >/dev/null 2>&1 || [ -x "/usr/sbin/$tool" ] || absent+=("$tool")
  done
  if [ ${#absent[@]} -gt 0 ]; then
    fail "CI is set and these are missing or unreachable: ${absent[*]}. Start the servers; scripts/install-system-packages.sh installs the tools (as root, with apt-get)."
  fi
  echo "all there: PostgreSQL, MariaDB, Redis, pgbouncer, node, npm, chromium, chromedriver, wrk, redis-server"
fi

phase "ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

phase "mypy (strict, with the Django and DRF stubs)"
.venv/bin/mypy

phase "migrations are complete"
$PY manage.py makemigrations --check --dry-run

phase "the Django 6.1 cells' virtualenvs and the TypeScript client's packages (begun at install)"
if ! wait "$installs_pid"; then
  cat "$scratch"/nox-install-*.log "$scratch/npm.log" "$installs_log" 2>/dev/null || true
  fail "installing the Django 6.1 cells (nox --install-only) or the TypeScript client's packages (npm ci) failed"
fi

# Each cell's test databases: the URL's database name, then this checkout's
# tag and the cell's (two checkouts testing at once never share one).
tag="$(printf '%s' "$PWD" | sha1sum | cut -c1-6)"
with_name() { # with_name URL SUFFIX: URL with _SUFFIX after its database name (query kept)
  local base="${1%%\?*}"
  printf '%s_%s%s' "$base" "$2" "${1#"$base"}"
}

job_sqlite_django52() {
  env -u DATABASE_URL SQLITE_TEST_DATABASE="$scratch/sqlite_django52.sqlite3" $PY -m pytest "${XDIST[@]}" "$@"
}
job_postgresql_django52() {
  DATABASE_URL="$(with_name "$POSTGRES_URL" "${tag}_py311")" $PY -m pytest "${XDIST[@]}" "$@"
}
job_mariadb_django52() {
  DATABASE_URL="$(with_name "$MARIADB_URL" "${tag}_py311")" $PY -m pytest "${XDIST[@]}" "$@"
}
nox_cell() { # nox_cell PYTHON DATABASE pytest-args...
  local python="$1" database="$2"
  shift 2
  CELL_DATABASES="$database" CELL_TAG="${tag}_py${python//./}" \
    .venv/bin/nox -s "tests(py$python-django6.1)" -- -m "not browser" "${XDIST[@]}" "$@"
}
job_sqlite_py312_django61() { nox_cell 3.12 sqlite "$@"; }
job_postgresql_py312_django61() { nox_cell 3.12 postgresql "$@"; }
job_sqlite_py313_django61() { nox_cell 3.13 sqlite "$@"; }
job_postgresql_py313_django61() { nox_cell 3.13 postgresql "$@"; }
job_benchmarks_quick() { $PY -m benchmarks.run --quick; }
# Fails on a lost acknowledged write, a resurrected delete, a 500 or a
# stalled request the server did not cut off (benchmarks/chaos.py). Last of
# the PostgreSQL runs, so beside at most a run that yields it the CPU.
job_chaos_quick() { $PY -m benchmarks.chaos --quick | grep -v "^RESULT "; }

# Longest first (alone they took: PostgreSQL ~100-110 s, MariaDB ~85, SQLite
# ~70-80, the benchmarks ~70, the chaos run 35), one at a time of those that
# use PostgreSQL: a cell's servers and pools peak at some 50 of its 100
# connections, the HTTP benchmark's two workers at 54.
pending=()
[ -n "$have_postgres" ] && pending+=(postgresql_py312_django61)
[ -n "$have_mariadb" ] && pending+=(mariadb_django52)
[ -n "$have_postgres" ] && pending+=(postgresql_py313_django61 postgresql_django52)
pending+=(sqlite_py312_django61 sqlite_py313_django61 sqlite_django52 benchmarks_quick)
[ -n "$have_postgres" ] && pending+=(chaos_quick)
declare -A run_name=() run_began=()
run_seconds=()
failed=()
uses_postgres() { [[ $1 == postgresql* || $1 == chaos_quick || ($1 == benchmarks_quick && -n $have_postgres) ]]; }
postgres_busy() {
  local pid
  for pid in "${!run_name[@]}"; do uses_postgres "${run_name[$pid]}" && return 0; done
  return 1
}
start_next() { # starts the first pending run that may start now; 1 if none may
  local i name
  for i in "${!pending[@]}"; do
    name="${pending[$i]}"
    if uses_postgres "$name" && postgres_busy; then continue; fi
    pending=("${pending[@]:0:$i}" "${pending[@]:$((i + 1))}")
    echo "-- started: $name"
    (
      # The PostgreSQL runs are the longest chain (one at a time, each mostly
      # beside another run); the others yield them the CPU when both want it.
      if ! uses_postgres "$name"; then renice -n "$OTHERS_NICE" -p "$BASHPID" >/dev/null; fi
      "job_$name" "$@"
    ) >"$scratch/$name.log" 2>&1 &
    run_name[$!]="$name"
    run_began[$!]=$SECONDS
    return 0
  done
  return 1
}

# The wheel check builds and installs into a virtualenv of its own (mostly
# waiting on pip): it runs beside the tests, its output shown after.
wheel_log="$scratch/check-wheel.log"
bash scripts/check-wheel.sh >"$wheel_log" 2>&1 &
wheel_pid=$!

phase "the test runs, the quick benchmarks and the quick chaos run, $JOBS side by side (the wheel checked beside them)"
while [ ${#pending[@]} -gt 0 ] || [ ${#run_name[@]} -gt 0 ]; do
  while [ ${#run_name[@]} -lt "$JOBS" ] && start_next "$@"; do :; done
  status=0
  wait -n -p ended "${!run_name[@]}" || status=$?
  name="${run_name[$ended]}"
  seconds=$((SECONDS - run_began[$ended]))
  unset "run_name[$ended]"
  run_seconds+=("$(printf '%6ss    %s' "$seconds" "$name")")
  if [ "$status" -ne 0 ]; then
    echo "-- FAILED: $name (${seconds}s, exit status $status); its output:"
    cat "$scratch/$name.log"
    failed+=("$name")
  elif [ "$name" = benchmarks_quick ]; then
    echo "-- benchmarks, quick mode (proves they run; the figures mean little), ${seconds}s:"
    cat "$scratch/$name.log"
  elif [ "$name" = chaos_quick ]; then
    echo "-- chaos run, quick (30 s of load while the database, Redis and a worker fail), ${seconds}s:"
    cat "$scratch/$name.log"
  else
    echo "-- passed: $name (${seconds}s): $(grep -E '^[=]* ?[0-9]+ (passed|failed)' "$scratch/$name.log" | tail -n 1 | tr -d '=')"
  fi
done

phase "the wheel in a fresh project"
if ! wait "$wheel_pid"; then
  cat "$wheel_log"
  fail "check-wheel failed"
fi
grep -E "^check-wheel" "$wheel_log"
[ ${#failed[@]} -eq 0 ] || fail "these runs failed (output above): ${failed[*]}"

phase ""
echo "== wall time by phase"
for i in "${!phase_names[@]}"; do
  printf '%6ss  %s\n' "${phase_seconds[$i]}" "${phase_names[$i]}"
  if [[ ${phase_names[$i]} == "the test runs"* ]]; then
    for line in "${run_seconds[@]}"; do echo "  $line"; done
  fi
done
printf '%6ss  total\n' $((SECONDS - started))
ran=(SQLite)
skipped=()
if [ -n "$have_postgres" ]; then ran+=(PostgreSQL); else skipped+=("PostgreSQL (server not reachable)"); fi
if [ -n "$have_mariadb" ]; then ran+=(MariaDB); else skipped+=("MariaDB (server not reachable)"); fi
ran+=("Django 6.1 on Python 3.12 and 3.13")
echo "== backends tested: ${ran[*]}"
if [ ${#skipped[@]} -gt 0 ]; then echo "== backends skipped: ${skipped[*]}"; fi
