#!/usr/bin/env bash
# Soak: a steady GetMetrics load with ScaledObject churn for DURATION seconds against a
# throwaway redis-server and the release scaler, on free loopback ports only. In the middle
# redis-server is killed (SIGKILL) and started again on the same port DOWN seconds later.
# Every REPORT seconds a line: requests answered, errors by gRPC code, unexpected errors, live
# measurements (the scaler's /metrics) and the scaler's RSS; then a summary. Exits non-zero on
# any unexpected error or an RSS growth of 5 % or more after the warm-up.
# Bounded: DURATION + about 10 s (plus a build if the tree changed).
#
# Usage: benches/soak.sh [DURATION=600] [REPORT=10]
# Environment: SOAK_RATE (GetMetrics/s, 500), SOAK_SCALED_OBJECTS (live at once, 1000),
# SOAK_CHURN (new ScaledObjects/s, 10), SOAK_DOWN (s, 5), SOAK_WARMUP (s, 120),
# SOAK_IDLE_EXPIRY (30s), SOAK_MAX_LIVE (50000, the default), SCALER_BIN (another build of the
# scaler, for before/after; default: this tree's release build)
set -euo pipefail
DURATION=${1:-600}
REPORT=${2:-10}
RATE=${SOAK_RATE:-500}
SCALED_OBJECTS=${SOAK_SCALED_OBJECTS:-1000}
CHURN=${SOAK_CHURN:-10}
DOWN=${SOAK_DOWN:-5}
WARMUP=${SOAK_WARMUP:-120}
IDLE_EXPIRY=${SOAK_IDLE_EXPIRY:-30s}
MAX_LIVE=${SOAK_MAX_LIVE:-50000}
source "$(dirname "$0")/lib/prelude.sh"

machine_line
# The load generator's own binary, not `cargo bench`: it must receive the signals below.
build_release_and_loadgen
loadgen=$loadgen_bin

# start_redis (prelude) keeps its port: the restart below reuses it.
start_redis

grpc_port=$(free_port); http_port=$(free_port)
cat > "$work/scaler.toml" <<TOML
[server]
grpc_listen = "127.0.0.1:$grpc_port"
http_listen = "127.0.0.1:$http_port"
[measurements]
idle_expiry = "$IDLE_EXPIRY"
max_live = $MAX_LIVE
[sources.redis-main]
type = "redis"
url = "redis://127.0.0.1:$redis_port/0"
TOML
"${SCALER_BIN:-${CARGO_TARGET_DIR:-target}/release/backlog-scaler}" serve --config "$work/scaler.toml" 2>"$work/scaler.log" &
scaler_pid=$!; pids+=("$scaler_pid"); wait_port "$grpc_port"; wait_port "$http_port"
echo "== scaler pid $scaler_pid (idle_expiry $IDLE_EXPIRY, max_live $MAX_LIVE), redis-server on 127.0.0.1:$redis_port"

"$loadgen" --soak --target "127.0.0.1:$grpc_port" --connections 4 --concurrency 256 \
  --rate "$RATE" --scaled-objects "$SCALED_OBJECTS" --churn "$CHURN" --duration "$DURATION" \
  --report-every "$REPORT" --rss-warmup "$WARMUP" --scaler-pid "$scaler_pid" \
  --metrics-addr "127.0.0.1:$http_port" &
load_pid=$!; pids+=("$load_pid")

# The backend restart, announced to the load generator so it knows when UNAVAILABLE is expected.
sleep $((DURATION / 2))
kill -USR1 "$load_pid"
kill -KILL "$redis_pid"; wait "$redis_pid" 2>/dev/null || true
sleep "$DOWN"
start_redis
kill -USR2 "$load_pid"

status=0
wait "$load_pid" || status=$?
if ! kill -0 "$scaler_pid" 2>/dev/null; then
  echo "== the scaler exited during the soak; its log:"; tail -20 "$work/scaler.log"; status=1
fi
echo "== scaler log: $(grep -c ' WARN ' "$work/scaler.log" || true) WARN, $(grep -c ' ERROR ' "$work/scaler.log" || true) ERROR lines"
exit "$status"
