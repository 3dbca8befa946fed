#!/usr/bin/env bash
# The project's one test command (README "Test"; CI runs it through .ci/run):
# install missing test servers, then format check, clippy with -D warnings, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
