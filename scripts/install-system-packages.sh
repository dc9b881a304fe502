#!/usr/bin/env bash
# Install the Debian packages the tests and benchmarks use, when missing and
# this user may install packages: chromium + chromium-driver (the end-to-end
# admin test) and wrk (the HTTP benchmark's load generator). Never downloads
# a browser build of its own.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-packages: not root or no apt-get; not installing ${missing[*]}"
  exit 1
fi
echo "install-system-packages: installing ${missing[*]} from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
apt-get install -y -qq -o DPkg::Lock::Timeout=600 "${missing[@]}" >/dev/null
