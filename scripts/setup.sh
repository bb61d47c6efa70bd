#!/usr/bin/env bash
# Installs what patrol's tests need on a fresh machine, skipping whatever is already there:
# - Python: aiosmtpd (a real SMTP server), pytest, pycep-parser and checkov (offline Bicep validation);
# - Node.js: Azurite (the Azure Storage emulator, for the Function App's storage: blob leases);
# - Debian: chromium (renders patrol's HTML report in a test), zip/unzip (packaging test), shellcheck (deployment
#   scripts).
# Idempotent; safe to run repeatedly.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v zip >/dev/null 2>&1 || need_apt+=(zip)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
command -v shellcheck >/dev/null 2>&1 || need_apt+=(shellcheck)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
fi

py_missing=()
python3 -c 'import aiosmtpd' 2>/dev/null || py_missing+=(aiosmtpd)
python3 -c 'import pytest' 2>/dev/null || py_missing+=(pytest)
python3 -c 'import pycep' 2>/dev/null || py_missing+=(pycep-parser)
command -v checkov >/dev/null 2>&1 || py_missing+=(checkov)
if [ ${#py_missing[@]} -gt 0 ]; then
  echo "setup: pip install ${py_missing[*]}"
  python3 -m pip install --quiet --disable-pip-version-check "${py_missing[@]}"
fi

if [ ! -x tools/node_modules/.bin/azurite-blob ]; then
  echo "setup: npm install (tools/: azurite)"
  (cd tools && npm ci --silent --no-audit --no-fund)
fi
echo "setup: ok"
