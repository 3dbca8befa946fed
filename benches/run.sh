#!/usr/bin/env bash
# Measures every ratio of BENCHMARKS.md in one run on this machine, against throwaway servers
# on loopback only. Bounded: about 3 minutes. Usage: benches/run.sh [seconds-per-load, default 10]
set -euo pipefail
SECONDS_PER_LOAD=${1:-10}
source "$(dirname "$0")/lib/prelude.sh"

machine_line
build_release_and_loadgen
loadgen() { "$loadgen_bin" "$@"; }

start_redis
rcli() { redis-cli -p "$redis_port" "$@"; }
for q in $(seq 0 9); do rcli RPUSH "bench:queue:$q" $(seq 1 $((q * 10 + 1))) >/dev/null; done

start_postgres

grpc_port=$(free_port)
cat > "$work/scaler.toml" <<TOML
[server]
grpc_listen = "127.0.0.1:$grpc_port"
[measurements]
max_live = 20000
[sources.redis-main]
type = "redis"
url = "redis://127.0.0.1:$redis_port/0"
[sources.pg-main]
type = "postgres"
url = "postgres://scaler@127.0.0.1:$pg_port/postgres?sslmode=disable"
TOML
target/release/backlog-scaler serve --config "$work/scaler.toml" 2>"$work/scaler.log" &
scaler_pid=$!; pids+=($scaler_pid); wait_port "$grpc_port"
target="127.0.0.1:$grpc_port"

echo "== (a) warm GetMetrics vs Health/Check, 4 connections x 64 concurrency, ${SECONDS_PER_LOAD}s each"
loadgen --target "$target" --call health --connections 4 --concurrency 64 --duration "$SECONDS_PER_LOAD" | tee "$work/health.txt"
calls_before=$(rcli INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ && !/cmdstat_info/ {s+=$3} END {print s}')
loadgen --target "$target" --call get-metrics --connections 4 --concurrency 64 --scaled-objects 1000 --queues 10 --duration "$SECONDS_PER_LOAD" | tee "$work/metrics.txt"
calls_after=$(rcli INFO commandstats | awk -F'[=,:]' '/^cmdstat_/ && !/cmdstat_info/ {s+=$3} END {print s}')
health_rps=$(awk '/Requests\/sec/ {print $2}' "$work/health.txt")
metrics_rps=$(awk '/Requests\/sec/ {print $2}' "$work/metrics.txt")
metrics_count=$(awk '/Count:/ {print $2}' "$work/metrics.txt")
echo "RATIO (a) GetMetrics/Health req/s = $(python3 -c "print(round($metrics_rps/$health_rps, 3))") (goal >= 0.9)"

echo "== (b) Redis commands per GetMetrics, 1000 ScaledObjects over 10 queues (INFO commandstats delta, INFO itself excluded)"
echo "commands: $((calls_after - calls_before)), GetMetrics: $metrics_count"
echo "RATIO (b) commands/GetMetrics = $(python3 -c "print(f'{($calls_after - $calls_before)/$metrics_count:.6f}')") (goal <= 0.01)"

echo "== (b) PostgreSQL statements per GetMetrics, 1000 ScaledObjects over 10 pg_stat_activity filters (the scaler's own rows in pg_stat_statements)"
psql_pg "SELECT pg_stat_statements_reset()" >/dev/null
loadgen --target "$target" --call get-metrics --metric pg-activity --source pg-main --connections 4 --concurrency 64 \
  --scaled-objects 1000 --queues 10 --duration "$SECONDS_PER_LOAD" | tee "$work/pg.txt"
pg_calls=$(psql_pg "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = 'scaler'::regrole")
pg_count=$(awk '/Count:/ {print $2}' "$work/pg.txt")
echo "scaler statements (BEGIN, SET LOCAL, reads, COMMIT all counted): $pg_calls, GetMetrics: $pg_count"
echo "RATIO (b-pg) statements/GetMetrics = $(python3 -c "print(f'{$pg_calls/$pg_count:.6f}')") (goal <= 0.01)"

echo "== (e) cold GetMetrics p50 vs redis-benchmark LLEN p50 + Health/Check p50, 1 connection x 1 caller"
loadgen --target "$target" --call get-metrics --cold --requests 2000 --connections 1 --concurrency 1 --duration 60 | tee "$work/cold.txt"
loadgen --target "$target" --call health --connections 1 --concurrency 1 --duration 5 | tee "$work/health1.txt"
redis-benchmark -p "$redis_port" -c 1 -n 20000 LLEN bench:queue:0 > "$work/llen.txt" 2>&1 || true
llen_p50=$(awk '/latency summary/ {getline; getline; print $3}' "$work/llen.txt")
cold_p50=$(awk '/p50/ {print $2; exit}' "$work/cold.txt")
health_p50=$(awk '/p50/ {print $2; exit}' "$work/health1.txt")
echo "cold p50 $cold_p50 ms, LLEN p50 $llen_p50 ms, health p50 $health_p50 ms"
echo "RATIO (e) cold/(LLEN+health) = $(python3 -c "print(round($cold_p50/($llen_p50+$health_p50), 3))") (goal <= 1.5)"

echo "== (d) memory at 10,000 live measurements"
rss_before=$(rss_kib "$scaler_pid")
loadgen --target "$target" --call get-metrics --cold --requests 10000 --connections 4 --concurrency 32 --duration 120 > "$work/fill.txt"
grep -E "Count|Status|\[" "$work/fill.txt"
sleep 2
rss_scaler=$(rss_kib "$scaler_pid")
echo "scaler RSS: $rss_before KiB before, $rss_scaler KiB with 10,000+ live measurements"

echo "== (c) freshness: the scaler vs prometheus-redis-exporter + Prometheus (15 s scrape)"
loadgen --target "$target" --watch-key bench:fresh:scaler --redis-url "redis://127.0.0.1:$redis_port/0" --jump 1000 --trials 5 | tee "$work/fresh.txt"
exporter_port=$(free_port); prom_port=$(free_port)
# The exporter watches the freshness key plus 10,000 keys (short names: one argument is at
# most 128 KiB), so the Prometheus stack holds as
# many series as the scaler holds measurements in (d).
mem_keys=$(python3 -c 'print(",".join(["bench:fresh:prom"] + [f"m:{i}" for i in range(10000)]))')
prometheus-redis-exporter -redis.addr "redis://127.0.0.1:$redis_port" -check-single-keys "$mem_keys" \
  -web.listen-address "127.0.0.1:$exporter_port" >/dev/null 2>&1 &
exporter_pid=$!; pids+=($exporter_pid); wait_port "$exporter_port"
cat > "$work/prometheus.yml" <<YAML
global:
  scrape_interval: 15s
scrape_configs:
  - job_name: redis
    static_configs:
      - targets: ["127.0.0.1:$exporter_port"]
YAML
prometheus --config.file "$work/prometheus.yml" --storage.tsdb.path "$work/tsdb" \
  --web.listen-address "127.0.0.1:$prom_port" >/dev/null 2>&1 &
prom_pid=$!; pids+=($prom_pid); wait_port "$prom_port"
prom_value() { curl -s "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=redis_key_size{key="bench:fresh:prom"}' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)'; }
sleep 20  # a first scrape
prom_samples=()
for trial in 0 1 2; do
  sleep $((trial * 4 + 1))
  before=$(prom_value); start=$(date +%s.%N)
  rcli RPUSH bench:fresh:prom $(seq 1000) >/dev/null
  while python3 -c "import sys; sys.exit(0 if float('$(prom_value)') < float('$before') + 1000 else 1)"; do sleep 0.1; done
  took=$(python3 -c "print(round(($(date +%s.%N) - $start) * 1000))")
  echo "  prometheus trial $trial: $took ms"; prom_samples+=("$took")
done
samples=$(IFS=,; echo "${prom_samples[*]}")
prom_mean=$(python3 -c "import statistics; print(round(statistics.mean([$samples])))")
prom_median=$(python3 -c "import statistics; print(round(statistics.median([$samples])))")
scaler_median=$(awk '/Freshness/ {print $3}' "$work/fresh.txt")
scaler_mean=$(awk '/Freshness/ {print $6}' "$work/fresh.txt")
echo "Prometheus route: median $prom_median ms, mean $prom_mean ms"
echo "RATIO (c) scaler/Prometheus freshness (median) = $(python3 -c "print(round($scaler_median/$prom_median, 3))") (goal <= 0.1)"
sleep 16  # one more scrape of the 10,000 series before reading RSS
rss_exporter=$(rss_kib "$exporter_pid"); rss_prom=$(rss_kib "$prom_pid")
echo "Prometheus series: $(curl -s "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode 'query=count(redis_key_size)' \
  | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)') redis_key_size series"
echo "exporter RSS $rss_exporter KiB + Prometheus RSS $rss_prom KiB = $((rss_exporter + rss_prom)) KiB"
echo "RATIO (d) scaler RSS at 10,000 measurements / exporter+Prometheus RSS = $(python3 -c "print(round($rss_scaler/($rss_exporter+$rss_prom), 3))") (goal <= 0.1)"
