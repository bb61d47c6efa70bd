#!/usr/bin/env bash
# patrol's whole test suite: formatting, lints, every Rust test (unit, property, integration against
# patrol-emulator, Azurite, a real SMTP server and headless Chromium), the infra tests and, when present, the
# official Microsoft clients against patrol-emulator. Python comes from .venv/ (scripts/setup.sh, pinned
# versions); the official specs the conformance tests read come from ../shared/specs or PATROL_SPECS_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The venv's python (aiosmtpd for the SMTP tests) and the pinned Node tools come first on PATH; the Rust tests
# also read PATROL_TEST_PYTHON.
export PATROL_TEST_PYTHON="$PWD/.venv/bin/python"
export PATH="$PWD/.venv/bin:$PWD/tools/node_modules/.bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# the production handler (scripts/package.sh): no demo, no emulator
cargo clippy -p patrol --no-default-features --lib --bins -- -D warnings
cargo test --workspace
if [ -d infra/tests ]; then
  "$PATROL_TEST_PYTHON" -m pytest -q infra/tests
fi
if [ -d tests/official-clients ]; then
  "$PATROL_TEST_PYTHON" -m pytest -q tests/official-clients
fi
