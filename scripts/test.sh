#!/usr/bin/env bash
# The project's one test command (README "Test"; CI runs it through .ci/run):
# install missing test servers and tools, then format check, supply-chain checks (cargo deny),
# clippy with -D warnings, and every test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-test-deps.sh
cargo fmt --all -- --check

# deny.toml: licences, duplicate versions (warnings; `cargo deny check bans` lists them) and
# sources. install-test-deps.sh puts cargo-deny in .test-deps/ when PATH has none.
export PATH="$PWD/.test-deps/cargo-deny/bin:$PWD/.test-deps/cargo/bin:$PATH"
cargo deny --locked --log-level error check --show-stats licenses bans sources
# Advisories need the RustSec database, which cargo-deny clones from GitHub; where a copy is
# already on the machine it is used as it is, otherwise the check is skipped, saying so.
if ls "${CARGO_HOME:-$HOME/.cargo}"/advisory-dbs/*/crates >/dev/null 2>&1; then
  cargo deny --locked --offline --log-level error check --show-stats advisories
else
  echo "cargo deny: advisories skipped: no RustSec advisory database on this machine, and it" \
    "is fetched from GitHub, which this network does not reach (only package registries);" \
    "where GitHub is reachable, run: cargo deny check advisories"
fi
cargo clippy --all-targets --locked -- -D warnings
cargo test --locked
