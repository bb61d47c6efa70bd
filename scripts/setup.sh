#!/usr/bin/env bash
# Installs what patrol's tests need on a fresh machine, at pinned versions, skipping whatever is already there:
# - Python: a virtual environment in .venv/ (never global pip) with the exact versions in requirements-test.txt
#   (aiosmtpd: a real SMTP server; pytest; pycep-parser and checkov: offline Bicep validation; and every
#   dependency of those, pinned too), plus tests/official-clients/requirements.txt when that file exists
#   (Microsoft's official Python clients, run against patrol-emulator). The venv is rebuilt from scratch
#   whenever a requirements file changes, so it never holds a stale package.
# - Node.js: Azurite (the Azure Storage emulator, for the Function App's storage: blob leases), from the lock
#   file tools/package-lock.json (npm ci).
# - Debian: chromium (renders patrol's HTML report in a test), zip/unzip (packaging test), shellcheck
#   (deployment scripts), pinned where Debian keeps the version (see APT_PINNED below).
# Idempotent; safe to run repeatedly. scripts/test.sh runs it first and then uses .venv/bin/python.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages. shellcheck is pinned: a newer shellcheck adds warnings, and the infra tests fail on any.
# chromium is not pinned: Debian's security archive keeps only the latest chromium build (old ones vanish
# within weeks), and the test only renders a page with it. zip/unzip and Node.js are only installed when
# missing (the machine usually has them; their output does not depend on the version).
APT_PINNED=(shellcheck=0.9.0-1)
need_apt=()
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v zip >/dev/null 2>&1 || need_apt+=(zip)
command -v unzip >/dev/null 2>&1 || need_apt+=(unzip)
if command -v shellcheck >/dev/null 2>&1; then
  have="$(shellcheck --version | sed -n 's/^version: //p')"
  want="${APT_PINNED[0]#shellcheck=}"
  [ "$have" = "${want%-*}" ] || need_apt+=("${APT_PINNED[0]}")
else
  need_apt+=("${APT_PINNED[0]}")
fi
command -v node >/dev/null 2>&1 || need_apt+=(nodejs npm)
python="${PATROL_SETUP_PYTHON:-python3}"
command -v "$python" >/dev/null 2>&1 || { echo "setup: $python is needed (CPython >= 3.11)" >&2; exit 1; }
"$python" -c 'import ensurepip, venv' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: apt-get install ${need_apt[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends --allow-downgrades \
      "${need_apt[@]}" >/dev/null
  else
    echo "setup: please install: ${need_apt[*]} (needs root)" >&2
    exit 1
  fi
fi

# Python: .venv/ from the pinned requirements. A stamp records the requirement files it was built from.
venv=.venv
reqs=(requirements-test.txt)
[ -f tests/official-clients/requirements.txt ] && reqs+=(tests/official-clients/requirements.txt)
stamp="$( (cat "${reqs[@]}"; "$python" -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$venv/.patrol-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "setup: creating $venv (pip install -r ${reqs[*]})"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  pip=("$venv/bin/python" -m pip --quiet --disable-pip-version-check --no-input)
  # The test tools first (every version exact), then the official clients; `pip check` then fails if the
  # second file moved a package outside what the first one's packages accept.
  for r in "${reqs[@]}"; do
    "${pip[@]}" install -r "$r"
  done
  "${pip[@]}" check
  echo "$stamp" > "$venv/.patrol-stamp"
fi

if [ ! -x tools/node_modules/.bin/azurite-blob ]; then
  echo "setup: npm ci (tools/: azurite, from package-lock.json)"
  (cd tools && npm ci --silent --no-audit --no-fund)
fi
echo "setup: ok"
