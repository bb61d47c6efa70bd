#!/usr/bin/env bash
# patrol's whole test suite: formatting, lints, every Rust test (unit, property, integration against
# patrol-emulator, Azurite, a real SMTP server and headless Chromium) and the infra tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/tools/node_modules/.bin:$PATH"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
if [ -d infra/tests ]; then
  python3 -m pytest -q infra/tests
fi
