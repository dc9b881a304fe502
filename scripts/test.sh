#!/usr/bin/env bash
# Install everything and run the whole test suite: lint, then the tests on
# SQLite, then on PostgreSQL (127.0.0.1:5432) when that server answers.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/install-system-packages.sh || echo "test: system packages missing; the browser test and the HTTP benchmark will say they skipped"

PY=.venv/bin/python
POSTGRES_URL="${POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
MARIADB_URL="${MARIADB_URL:-mysql://root@127.0.0.1:3306/test}"

echo "== ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .

echo "== mypy (strict, with the Django and DRF stubs)"
.venv/bin/mypy

echo "== migrations are complete"
$PY manage.py makemigrations --check --dry-run

ran=()
skipped=()

echo "== tests on SQLite"
env -u DATABASE_URL $PY -m pytest "$@"
ran+=("SQLite")

if $PY - "$POSTGRES_URL" <<'PYEOF'
import sys
import psycopg
try:
    psycopg.connect(sys.argv[1].replace("postgres://", "postgresql://"), connect_timeout=3).close()
except Exception as exc:
    print(f"PostgreSQL at {sys.argv[1]} is not reachable: {exc}")
    sys.exit(1)
PYEOF
then
  echo "== tests on PostgreSQL ($POSTGRES_URL)"
  DATABASE_URL="$POSTGRES_URL" $PY -m pytest "$@"
  ran+=("PostgreSQL")
else
  skipped+=("PostgreSQL (server not reachable)")
fi

if $PY - <<'PYEOF'
import pymysql
try:
    pymysql.connect(host="127.0.0.1", port=3306, user="root", password="", connect_timeout=3).close()
except Exception as exc:
    print(f"MariaDB at 127.0.0.1:3306 is not reachable: {exc}")
    raise SystemExit(1)
PYEOF
then
  echo "== tests on MariaDB ($MARIADB_URL)"
  DATABASE_URL="$MARIADB_URL" $PY -m pytest "$@"
  ran+=("MariaDB")
else
  skipped+=("MariaDB (server not reachable)")
fi

echo "== the wheel in a fresh project"
bash scripts/check-wheel.sh 2>&1 | grep -E "^check-wheel|Error|error" || { echo "check-wheel failed"; exit 1; }

echo "== the support matrix: Django 6.1 on Python 3.12 and 3.13 (noxfile.py), SQLite and PostgreSQL"
.venv/bin/nox -s "tests(py3.12-django6.1)" "tests(py3.13-django6.1)" -- -m "not browser"
ran+=("Django 6.1 on Python 3.12 and 3.13")

echo "== benchmarks, quick mode (proves they run; the figures mean little)"
$PY -m benchmarks.run --quick

echo "== backends tested: ${ran[*]}"
if [ ${#skipped[@]} -gt 0 ]; then echo "== backends skipped: ${skipped[*]}"; fi
