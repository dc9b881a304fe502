#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use, when missing and
# this user may install packages: chromium + chromium-driver (the end-to-end
# admin test), wrk (the HTTP benchmark's load generator), pgbouncer (the
# store and the API behind a transaction pooler, tests/test_pgbouncer.py),
# node + npm (the generated TypeScript client) and redis-server (a private
# Redis for the cache tests). Never downloads a browser build of its own.
set -euo pipefail
missing=()
has() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
has chromium || missing+=(chromium)
has chromedriver || missing+=(chromium-driver)
has wrk || missing+=(wrk)
has pgbouncer || missing+=(pgbouncer)
has node || missing+=(nodejs)
has npm || missing+=(npm)
has redis-server || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-packages: not root or no apt-get; not installing ${missing[*]}"
  exit 1
fi
echo "install-system-packages: installing ${missing[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
