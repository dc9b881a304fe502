#!/usr/bin/env bash
# Install everything and run the whole test suite: lint; the tests on
# SQLite, PostgreSQL (127.0.0.1:5432) and MariaDB (127.0.0.1:3306) with
# Django 5.2 on Python 3.11; the wheel in a fresh project; Django 6.1 on
# Python 3.12 and 3.13 on SQLite and PostgreSQL (noxfile.py); the benchmarks
# in quick mode. Extra arguments go to pytest.
#
# Each pytest run spreads over PYTEST_WORKERS processes (pytest-xdist,
# default 2; 0 runs in this process), each with a test database of its own.
#
# With CI set (.ci/run sets CI=true), whatever the suite expects on this
# machine (PostgreSQL, MariaDB, Redis, pgbouncer, node, chromium, wrk) and
# cannot reach or install fails the run with a message saying what is
# missing; elsewhere a missing database server is skipped with a note, and
# the tests that need a missing tool say they skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
CI="${CI:-}"

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
XDIST=()
# tests/conftest.py schedules them: a few modules whole on one worker, the
# rest test by test to whichever worker is free.
[ "$WORKERS" != "0" ] && XDIST=(-n "$WORKERS")

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

ran=()
skipped=()

# The wheel check builds and installs into a virtualenv of its own (mostly
# waiting on pip): it runs beside the SQLite tests, its output shown after.
wheel_log="$(mktemp /tmp/check-wheel-log-XXXXXX)"
bash scripts/check-wheel.sh >"$wheel_log" 2>&1 &
wheel_pid=$!
trap 'kill "$wheel_pid" 2>/dev/null || true; rm -f "$wheel_log"' EXIT

phase "tests on SQLite (the wheel is checked beside them)"
env -u DATABASE_URL $PY -m pytest "${XDIST[@]}" "$@"
ran+=("SQLite")

phase "the wheel in a fresh project"
if ! wait "$wheel_pid"; then
  cat "$wheel_log"
  fail "check-wheel failed"
fi
grep -E "^check-wheel" "$wheel_log"

if [ -n "$have_postgres" ]; then
  phase "tests on PostgreSQL ($POSTGRES_URL)"
  DATABASE_URL="$POSTGRES_URL" $PY -m pytest "${XDIST[@]}" "$@"
  ran+=("PostgreSQL")
else
  skipped+=("PostgreSQL (server not reachable)")
fi

if [ -n "$have_mariadb" ]; then
  phase "tests on MariaDB ($MARIADB_URL)"
  DATABASE_URL="$MARIADB_URL" $PY -m pytest "${XDIST[@]}" "$@"
  ran+=("MariaDB")
else
  skipped+=("MariaDB (server not reachable)")
fi

phase "the support matrix: Django 6.1 on Python 3.12 and 3.13 (noxfile.py), SQLite and PostgreSQL"
.venv/bin/nox -s "tests(py3.12-django6.1)" "tests(py3.13-django6.1)" -- -m "not browser" "${XDIST[@]}"
ran+=("Django 6.1 on Python 3.12 and 3.13")

phase "benchmarks, quick mode (proves they run; the figures mean little)"
$PY -m benchmarks.run --quick

if [ -n "$have_postgres" ]; then
  # Fails the run on a lost acknowledged write, a resurrected delete, a 500
  # or a stalled request the server did not cut off (benchmarks/chaos.py).
  phase "chaos run, quick (30 s of load while the database, Redis and a worker fail)"
  $PY -m benchmarks.chaos --quick | grep -v "^RESULT "
fi

phase ""
echo "== wall time by phase"
for i in "${!phase_names[@]}"; do
  printf '%6ss  %s\n' "${phase_seconds[$i]}" "${phase_names[$i]}"
done
printf '%6ss  total\n' $((SECONDS - started))
echo "== backends tested: ${ran[*]}"
if [ ${#skipped[@]} -gt 0 ]; then echo "== backends skipped: ${skipped[*]}"; fi
