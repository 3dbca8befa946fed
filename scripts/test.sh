#!/usr/bin/env bash
# The project's one test command (README "Test"; CI runs it through .ci/run):
# install missing test servers and tools, then format check, supply-chain checks (cargo deny),
# clippy with -D warnings, and every test: with cargo-nextest where it is installed (tests in
# parallel processes, .config/nextest.toml; then the doctests, which nextest does not run),
# with `cargo test` elsewhere. Prints the time of each step and, with nextest, the ten
# slowest tests.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$SECONDS
step() { echo "== $1 ($((SECONDS - started)) s so far)"; }

step "test dependencies"
scripts/install-test-deps.sh
step "cargo fmt --check"
cargo fmt --all -- --check

# deny.toml: licences, duplicate versions (warnings; `cargo deny check bans` lists them) and
# sources. install-test-deps.sh puts cargo-deny in .test-deps/ when PATH has none.
step "cargo deny"
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

step "cargo clippy"
cargo clippy --all-targets --locked -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
  step "cargo nextest run"
  status=0
  cargo nextest run --locked || status=$?
  # The ten slowest tests of this run, from nextest's JUnit report (.config/nextest.toml).
  python3 - target/nextest/default/junit.xml <<'PY' || true
import sys, xml.etree.ElementTree as ET
cases = [(float(c.get("time", 0)), c.get("name")) for c in ET.parse(sys.argv[1]).iter("testcase")]
print("== the 10 slowest tests")
for seconds, name in sorted(cases, reverse=True)[:10]:
    print(f"{seconds:8.2f} s  {name}")
PY
  [ "$status" = 0 ] || exit "$status"
  step "cargo test --doc"
  cargo test --locked --doc
else
  step "cargo test (cargo-nextest is not installed: tests run per binary, no timings)"
  cargo test --locked
fi
echo "== scripts/test.sh passed in $((SECONDS - started)) s"
