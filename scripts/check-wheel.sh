#!/usr/bin/env bash
# Build the wheel and sdist of sessions_app, install the wheel into a fresh
# virtualenv beside a project made by `django-admin startproject`, add the
# app with two lines, migrate, and check with real requests on 127.0.0.1
# that the API and the admin answer.
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d /tmp/sessions-wheel-XXXXXX)"
# Not `kill 0` when the server never started: that would end the whole process
# group, the test command (which runs this beside its tests) included.
trap '[ -z "${server_pid:-}" ] || kill "$server_pid" 2>/dev/null || true; rm -rf "$work"' EXIT

.venv/bin/python -m build --sdist --wheel --outdir "$work/dist" . >/dev/null
wheel="$(ls "$work"/dist/*.whl)"
echo "check-wheel: built $(basename "$wheel") and $(basename "$(ls "$work"/dist/*.tar.gz)")"
.venv/bin/python - "$wheel" <<'PYEOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
assert any(n.startswith("sessions_app/migrations/0001_initial.py") for n in names), "migrations missing"
assert not any(n.startswith(("aa_project/", "tests/", "benchmarks/")) for n in names), "host project or tests leaked in"
print(f"check-wheel: {len(names)} files, migrations included, no host project or tests")
PYEOF

"$(.venv/bin/python -c 'import sys; print(sys.executable)')" -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet "$wheel" 2>&1 | grep -v "^WARNING: Location" || true
cd "$work"
"$work/venv/bin/django-admin" startproject hostsite
cd hostsite
# The two lines: the app (with the apps it builds on) and its URLs.
echo 'INSTALLED_APPS += ["rest_framework", "rest_framework_api_key", "django_filters", "drf_spectacular", "sessions_app"]' >> hostsite/settings.py
# Whom to believe about client addresses (check sessions_app.W002): no proxy in front.
echo 'REST_FRAMEWORK = {"NUM_PROXIES": 0}' >> hostsite/settings.py
sed -i 's/^from django.urls import path$/from django.urls import include, path/' hostsite/urls.py
echo 'urlpatterns += [path("api/", include("sessions_app.api.urls"))]' >> hostsite/urls.py

"$work/venv/bin/python" manage.py migrate --noinput -v0
"$work/venv/bin/python" manage.py check --fail-level WARNING
DJANGO_SUPERUSER_PASSWORD=wheel-Check-123 "$work/venv/bin/python" manage.py createsuperuser \
  --noinput --username admin --email admin@localhost >/dev/null
port="$("$work/venv/bin/python" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
"$work/venv/bin/python" manage.py runserver "127.0.0.1:$port" --noreload >"$work/server.log" 2>&1 &
server_pid=$!
"$work/venv/bin/python" - "$port" <<'PYEOF'
import base64, json, sys, time, urllib.error, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}"
auth = {"Authorization": "Basic " + base64.b64encode(b"admin:wheel-Check-123").decode()}
for _ in range(100):
    try:
        urllib.request.urlopen(base + "/admin/login/", timeout=2)
        break
    except OSError:
        time.sleep(0.2)
def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(base + path, data=data, method=method,
                                     headers={**auth, "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, json.loads(response.read() or b"null")
assert urllib.request.urlopen(base + "/admin/login/", timeout=10).status == 200
status, created = call("POST", "/api/sessions/", {"agent_id": 42, "started_at_ns": "18446744073709551615"})
assert status == 201, status
status, loaded = call("GET", f"/api/sessions/{created['session_id']}/")
assert status == 200 and loaded["started_at_ns"] == "18446744073709551615", loaded
try:
    urllib.request.urlopen(base + "/api/sessions/", timeout=10)
    raise AssertionError("anonymous list was allowed")
except urllib.error.HTTPError as exc:
    assert exc.code in (401, 403), exc.code
print("check-wheel: a fresh startproject with the wheel serves the admin and the API")
PYEOF
