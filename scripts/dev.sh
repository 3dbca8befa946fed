#!/usr/bin/env bash
# The README's run command: `backlog-scaler dev` with its servers installed.
# Installs redis-server and PostgreSQL (with pg_stat_statements) when they are missing and
# this runs as root; otherwise says which apt command would. Nothing else is installed (the
# test dependencies are scripts/install-test-deps.sh's). Arguments go to `dev`, e.g.
#   scripts/dev.sh --duration 10s
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(redis-server postgresql postgresql-contrib)
missing=false
command -v redis-server >/dev/null || missing=true
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  missing=true
fi
if ! ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1; then
  missing=true
fi
if [ "$missing" = true ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${packages[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
  else
    echo "backlog-scaler dev needs redis-server and PostgreSQL; as root run:" >&2
    echo "  apt-get install -y --no-install-recommends ${packages[*]}" >&2
    exit 1
  fi
fi

exec cargo run --release --locked -- dev "$@"
