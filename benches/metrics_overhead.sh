#!/usr/bin/env bash
# The cost of the metrics layer on the warm path: warm GetMetrics req/s of a scaler that
# records its RPC series (server.http_listen set) ÷ the same scaler without (unset), in
# alternating rounds of the same load within one run, against a throwaway redis-server on
# loopback. Bounded: rounds × 2 × seconds. Usage: benches/metrics_overhead.sh [rounds=5] [seconds=8]
set -euo pipefail
ROUNDS=${1:-5}
SECONDS_PER_ROUND=${2:-8}
source "$(dirname "$0")/lib/prelude.sh"

machine_line
build_release_and_loadgen
start_redis
for q in $(seq 0 9); do redis-cli -p "$redis_port" RPUSH "bench:queue:$q" 1 2 3 >/dev/null; done

# Sets $port. Not called as $(start_scaler ...): the scaler would hold the substitution's
# stdout open (it never returned), and its pid would be lost to the subshell.
start_scaler() { # NAME, extra [server] lines
  port=$(free_port)
  printf '[server]\ngrpc_listen = "127.0.0.1:%s"\n%s\n[sources.redis-main]\ntype = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' \
    "$port" "$2" "$redis_port" > "$work/$1.toml"
  target/release/backlog-scaler serve --config "$work/$1.toml" >/dev/null 2>"$work/$1.log" &
  pids+=($!); wait_port "$port"
}
start_scaler with "http_listen = \"127.0.0.1:$(free_port)\""; with_port=$port
start_scaler without ""; without_port=$port
rps() { # PORT -> req/s of a warm GetMetrics load
  "$loadgen_bin" --target "127.0.0.1:$1" --call get-metrics \
    --connections 4 --concurrency 64 --scaled-objects 1000 --queues 10 \
    --duration "$SECONDS_PER_ROUND" | awk '/Requests\/sec:/ {print $2}'
}
ratios=()
for round in $(seq "$ROUNDS"); do
  with=$(rps "$with_port"); without=$(rps "$without_port")
  ratio=$(python3 -c "print(f'{$with/$without:.3f}')")
  ratios+=("$ratio")
  echo "round $round: with metrics $with req/s, without $without req/s, ratio $ratio"
done
python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
print(f"== metrics on / off, warm GetMetrics req/s: median {statistics.median(r):.3f}, range {r[0]:.3f}-{r[-1]:.3f} over {len(r)} rounds (goal: >= 0.95)")
PY
