#!/usr/bin/env bash
# Install Debian's Chromium and ChromeDriver for the end-to-end admin test,
# when they are missing and this user may install packages. Never downloads
# a browser build of its own.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: not root or no apt-get; skipping"
  exit 1
fi
echo "install-browser: installing chromium and chromium-driver from Debian"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq -o DPkg::Lock::Timeout=600 >/dev/null
apt-get install -y -qq -o DPkg::Lock::Timeout=600 chromium chromium-driver >/dev/null
