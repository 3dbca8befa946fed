#!/usr/bin/env bash
# Goal 1 of issue 21 counted instead of timed: the scaler's CPU instructions per warm
# GetMetrics and per Health/Check, under valgrind's callgrind (repeatable within about 1 %
# whatever else the machine runs, unlike h2load's req/s on a shared VM).
#
#   benches/instructions.sh                               # the release build
#   SCALER_BIN=/path/to/backlog-scaler benches/instructions.sh   # another build
#
# Per kind, one scaler under callgrind answers h2load (8 connections x 16 streams) 2,000 and,
# in a second scaler, 12,000 requests, each after 256 warm-up GetMetrics; the difference of
# the two totals / 10,000 is one request. Needs valgrind, h2load (Debian nghttp2-client),
# redis-server, redis-cli, python3. About 2 minutes.
set -euo pipefail
source "$(dirname "$0")/lib/prelude.sh"
scaler_bin=${SCALER_BIN:-${CARGO_TARGET_DIR:-target}/release/backlog-scaler}
[ -n "${SCALER_BIN:-}" ] || cargo build --release --locked --quiet
machine_line
start_redis
redis-cli -p "$redis_port" RPUSH bench:queue:3 a b c >/dev/null
write_grpc_bodies "$work"
h2() { # PORT PATH BODY N
  h2load -c 8 -m 16 -t 1 -n "$4" -d "$3" -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$1$2" > "$work/h2.txt"
  grep -q ' 0 failed, 0 errored' "$work/h2.txt" || { grep -E 'requests:' "$work/h2.txt" >&2; exit 1; }
}
instructions() { # PATH BODY N -> the scaler's total instructions
  local port; port=$(free_port)
  printf '[server]\ngrpc_listen = "127.0.0.1:%s"\n[sources.redis-main]\ntype = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' \
    "$port" "$redis_port" > "$work/c.toml"
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.out" "$scaler_bin" serve \
    --config "$work/c.toml" >/dev/null 2>"$work/cg.log" &
  local pid=$!; pids+=($pid); wait_port "$port"
  h2 "$port" /externalscaler.ExternalScaler/GetMetrics "$work/get-metrics.bin" 256
  sleep 1
  h2 "$port" "$1" "$2" "$3"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
  awk '/^(summary|totals):/ {print $2; exit}' "$work/cg.out"
}
declare -A per
for kind in health get-metrics; do
  if [ "$kind" = health ]; then path=/grpc.health.v1.Health/Check; else path=/externalscaler.ExternalScaler/GetMetrics; fi
  low=$(instructions "$path" "$work/$kind.bin" 2000)
  high=$(instructions "$path" "$work/$kind.bin" 12000)
  per[$kind]=$(( (high - low) / 10000 ))
  echo "$kind: ${per[$kind]} instructions per request"
done
python3 -c "print(f'RESULT instructions per warm GetMetrics / per Health/Check: {${per[get-metrics]}/${per[health]}:.3f}')"
