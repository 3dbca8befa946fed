#!/usr/bin/env bash
# The six goals of issue 13 ("Performance II"), each printed as a `RESULT (n)` line, against
# throwaway servers on free loopback ports (never the machine's 6379/5432). Bounded: about
# 8 minutes with every section; stops by itself and cleans up.
#
#   benches/perf2.sh [seconds-per-load, default 8]
#   SECTIONS=1,3 benches/perf2.sh      # only some goals
#   SCALER_BIN=/path/to/backlog-scaler benches/perf2.sh   # measure another build (before/after)
#
# The build is `$CARGO_TARGET_DIR` (default target/)/release.
#
# 1 warm GetMetrics ÷ Health/Check req/s, h2load, ROUNDS (default 7) alternating rounds (median)
# 2 RSS bytes per live measurement beyond the idle process, at 10,000 and 100,000
# 3 restart storm: 10,000 never-seen Redis measurements within 1 s (answer time, batch reads),
#   1,000 never-seen pg-activity filters at once (pg_stat_activity reads)
# 4 large cluster: 100,000 ScaledObjects over 20,000 Redis + 1,000 PostgreSQL measurements
# 5 cold GetMetrics p50 ÷ (LLEN p50 + Health/Check p50), 5 runs
# 6 three replicas on one Redis: backend load and agreement between replicas
#
# Needs redis-server, redis-benchmark, redis-cli, PostgreSQL 13+ server binaries, psql, h2load
# (Debian nghttp2-client), curl, python3.
set -euo pipefail
SECONDS_PER_LOAD=${1:-8}
SECTIONS=${SECTIONS:-1,2,3,4,5,6}
ROUNDS=${ROUNDS:-7}
release=${CARGO_TARGET_DIR:-target}/release
scaler_bin=${SCALER_BIN:-$release/backlog-scaler}
want() { [[ ",$SECTIONS," == *",$1,"* ]]; }
source "$(dirname "$0")/lib/prelude.sh"
py() { python3 -c "$1"; }

machine_line
# Goal 1 alone needs only the scaler and h2load.
if [[ "$SECTIONS" == 1 ]]; then cargo build --release --locked --quiet; else build_release_and_loadgen; fi
if [ -n "${SCALER_BIN:-}" ]; then
  echo "== code: the scaler at $SCALER_BIN ($(stat -c %y "$SCALER_BIN" | cut -d. -f1)); load generator of $(git rev-parse --short HEAD 2>/dev/null)"
else
  echo "== code: $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' + uncommitted changes in src/')"
fi
loadgen() { "$loadgen_bin" "$@"; }

start_redis
rcli() { redis-cli -p "$redis_port" "$@"; }
for q in $(seq 0 9); do rcli RPUSH "bench:queue:$q" $(seq 1 $((q * 10 + 1))) >/dev/null; done
llen_calls() { rcli INFO commandstats | awk -F'[=,:]' '/^cmdstat_llen:/ {print $3} END {}' | head -1; }

start_postgres
activity_reads() { psql_pg "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements WHERE userid = 'scaler'::regrole AND query LIKE '%FROM pg_stat_activity%'"; }

# start_scaler NAME [extra [server] lines] [extra [measurements] lines]: sets $port, $http, $pid.
start_scaler() {
  port=$(free_port); http=$(free_port)
  cat > "$work/$1.toml" <<TOML
[server]
grpc_listen = "127.0.0.1:$port"
http_listen = "127.0.0.1:$http"
${2:-}
[measurements]
max_live = 200000
${3:-}
[sources.redis-main]
type = "redis"
url = "redis://127.0.0.1:$redis_port/0"
[sources.pg-main]
type = "postgres"
url = "postgres://scaler@127.0.0.1:$pg_port/postgres?sslmode=disable"
TOML
  "$scaler_bin" serve --config "$work/$1.toml" >/dev/null 2>"$work/$1.log" &
  pid=$!; pids+=($pid); wait_port "$port"; wait_port "$http"
}
stop_scaler() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
# scrape HTTP-PORT SERIES [LABEL-FILTER]: the sum of a series' samples.
scrape() { curl -s "http://127.0.0.1:$1/metrics" | awk -v s="$2" -v f="${3:-}" '{n = $1; sub(/\{.*/, "", n)} n == s && index($1, f) {v += $2} END {printf "%.6f\n", v}'; }

# ---------------------------------------------------------------------------------------------
if want 1; then
  echo "== (1) warm GetMetrics vs Health/Check, h2load 8 connections x 16 streams, 1 thread, $ROUNDS alternating rounds of ${SECONDS_PER_LOAD}s"
  # The measured scaler records no RPC series (no http_listen), as BENCHMARKS.md (a).
  port1=$(free_port)
  printf '[server]\ngrpc_listen = "127.0.0.1:%s"\n[sources.redis-main]\ntype = "redis"\nurl = "redis://127.0.0.1:%s/0"\n' \
    "$port1" "$redis_port" > "$work/h2.toml"
  "$scaler_bin" serve --config "$work/h2.toml" >/dev/null 2>"$work/h2.log" &
  pid1=$!; pids+=($pid1); wait_port "$port1"
  write_grpc_bodies "$work"
  # The body must be a GetMetrics the scaler answers OK (h2load checks only the HTTP status).
  curl -sv --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$work/get-metrics.bin" "http://127.0.0.1:$port1/externalscaler.ExternalScaler/GetMetrics" \
    -o "$work/reply.bin" 2>"$work/curl.txt" || true
  grep -q 'grpc-status: 0' "$work/curl.txt" || { echo "GetMetrics body rejected:"; grep -i grpc "$work/curl.txt"; exit 1; }
  echo "GetMetrics body answered grpc-status 0 ($(stat -c %s "$work/reply.bin") bytes)"
  h2() { # PATH BODY -> req/s
    h2load -c 8 -m 16 -t 1 -D "$SECONDS_PER_LOAD" --warm-up-time 1 -d "$2" \
      -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$port1$1" > "$work/h2.txt"
    grep -q ' 0 failed, 0 errored' "$work/h2.txt" || { grep -E 'requests:|status codes' "$work/h2.txt" >&2; }
    awk '/^finished in/ {gsub(",", "", $4); print $4}' "$work/h2.txt"
  }
  ratios=()
  for round in $(seq "$ROUNDS"); do
    h=$(h2 /grpc.health.v1.Health/Check "$work/health.bin")
    g=$(h2 /externalscaler.ExternalScaler/GetMetrics "$work/get-metrics.bin")
    r=$(py "print(f'{$g/$h:.3f}')"); ratios+=("$r")
    echo "  round $round: Health/Check $h req/s, GetMetrics $g req/s, ratio $r"
  done
  python3 - "${ratios[@]}" <<'PY'
import statistics, sys
r = sorted(float(x) for x in sys.argv[1:])
print(f"RESULT (1) warm GetMetrics / Health/Check req/s: median {statistics.median(r):.3f}, range {r[0]:.3f}-{r[-1]:.3f} over {len(r)} rounds (goal >= 0.95)")
PY
  stop_scaler "$pid1"
fi

# ---------------------------------------------------------------------------------------------
if want 2; then
  echo "== (2) RSS per live measurement beyond the idle process (fresh scaler, never-seen Redis lists)"
  start_scaler mem 'limits.max_concurrent_rpcs = 200000'
  sleep 3
  rss_idle=$(rss_kib "$pid")
  loadgen --target "127.0.0.1:$port" --storm 10000 --window-ms 2000 --connections 4 > "$work/fill1.txt"
  grep -E '\[' "$work/fill1.txt"
  sleep 3
  rss_10k=$(rss_kib "$pid"); live_10k=$(scrape "$http" backlog_scaler_measurements 'redis-main')
  loadgen --target "127.0.0.1:$port" --storm 90000 --window-ms 15000 --connections 4 > "$work/fill2.txt"
  grep -E '\[' "$work/fill2.txt"
  sleep 3
  rss_100k=$(rss_kib "$pid"); live_100k=$(scrape "$http" backlog_scaler_measurements 'redis-main')
  echo "RSS: idle $rss_idle KiB; $rss_10k KiB with ${live_10k%.*} live; $rss_100k KiB with ${live_100k%.*} live"
  py "
idle, a, b, na, nb = $rss_idle, $rss_10k, $rss_100k, ${live_10k%.*}, ${live_100k%.*}
print(f'RESULT (2) bytes per live measurement beyond idle: {(a-idle)*1024/na:.0f} B at {na:,}, {(b-idle)*1024/nb:.0f} B at {nb:,} ({(b-a)*1024/(nb-na):.0f} B each from {na:,} to {nb:,}) (goal <= 256)')"
  stop_scaler "$pid"
fi

# ---------------------------------------------------------------------------------------------
if want 3; then
  echo "== (3) restart storm: 10,000 never-seen Redis measurements within 1 s; 1,000 never-seen pg-activity filters at once"
  start_scaler storm 'limits.max_concurrent_rpcs = 200000'
  sleep 2
  reads_before=$(scrape "$http" backlog_scaler_backend_reads_total 'source="redis-main"')
  loadgen --target "127.0.0.1:$port" --storm 10000 --window-ms 1000 --connections 8 | tee "$work/storm.txt"
  reads_after=$(scrape "$http" backlog_scaler_backend_reads_total 'source="redis-main"')
  storm_reads=$(py "print(round($reads_after - $reads_before))")
  after_last=$(awk '/Last answer after the last request/ {print $7}' "$work/storm.txt")
  echo "RESULT (3) Redis storm: last answer ${after_last} s after the last request (goal <= 1), $storm_reads batch reads of redis-main during it, refreshes included (goal <= 20)"
  psql_pg "SELECT pg_stat_statements_reset()" >/dev/null
  pg_before=$(scrape "$http" backlog_scaler_backend_reads_total 'source="pg-main"')
  loadgen --target "127.0.0.1:$port" --storm 1000 --window-ms 0 --connections 8 --metric pg-activity --source pg-main | tee "$work/pgstorm.txt"
  pg_after=$(scrape "$http" backlog_scaler_backend_reads_total 'source="pg-main"')
  pg_reads=$(activity_reads)
  echo "RESULT (3) pg storm: $pg_reads pg_stat_activity reads (pg_stat_statements calls; $(py "print(round($pg_after - $pg_before))") batch reads of pg-main), last answer $(awk '/Last answer after the last request/ {print $7}' "$work/pgstorm.txt") s after the last request (goal <= 20 reads)"
  stop_scaler "$pid"
fi

# ---------------------------------------------------------------------------------------------
if want 4; then
  echo "== (4) large cluster: 100,000 ScaledObjects over 20,000 Redis + 1,000 PostgreSQL measurements"
  start_scaler large
  sleep 2
  lg() { loadgen --target "127.0.0.1:$port" --pg-queues 1000 --queues 20000 --connections 4 --concurrency 256 "$@"; }
  lg --call get-metrics --scaled-objects 21000 --duration 15 --no-warmup > "$work/large-fill.txt"
  grep -E '\[' "$work/large-fill.txt"
  echo "live: redis-main $(scrape "$http" backlog_scaler_measurements 'redis-main'), pg-main $(scrape "$http" backlog_scaler_measurements 'pg-main')"
  # Sample the age of the oldest served reading every 100 ms during the load.
  ( while true; do
      curl -s "http://127.0.0.1:$http/metrics" | awk '/^backlog_scaler_measurement_age_seconds/ {print}' >> "$work/age.txt"
      sleep 0.1
    done ) &
  sampler=$!; pids+=($sampler)
  reads0=$(scrape "$http" backlog_scaler_backend_reads_total 'source="redis-main"')
  timeouts0=$(scrape "$http" backlog_scaler_backend_reads_total 'outcome="timeout"')
  dsum0=$(scrape "$http" backlog_scaler_backend_read_duration_seconds_sum 'redis-main')
  dcount0=$(scrape "$http" backlog_scaler_backend_read_duration_seconds_count 'redis-main')
  llen0=$(llen_calls); t0=$(date +%s.%N)
  for round in 1 2 3; do
    lg --call get-metrics --scaled-objects 100000 --duration "$SECONDS_PER_LOAD" > "$work/large-get-$round.txt"
    lg --call health --duration "$SECONDS_PER_LOAD" > "$work/large-health-$round.txt"
    echo "  round $round: GetMetrics $(awk '/Requests\/sec/ {print $2}' "$work/large-get-$round.txt") req/s p99 $(awk '$1 == "p99" {print $2}' "$work/large-get-$round.txt") ms $(grep -E '\[' "$work/large-get-$round.txt" | tr -s ' ' | tr '\n' ' '); Health/Check $(awk '/Requests\/sec/ {print $2}' "$work/large-health-$round.txt") req/s p99 $(awk '$1 == "p99" {print $2}' "$work/large-health-$round.txt") ms"
  done
  t1=$(date +%s.%N); llen1=$(llen_calls)
  kill "$sampler" 2>/dev/null || true
  reads1=$(scrape "$http" backlog_scaler_backend_reads_total 'source="redis-main"')
  timeouts1=$(scrape "$http" backlog_scaler_backend_reads_total 'outcome="timeout"')
  dsum1=$(scrape "$http" backlog_scaler_backend_read_duration_seconds_sum 'redis-main')
  dcount1=$(scrape "$http" backlog_scaler_backend_read_duration_seconds_count 'redis-main')
  curl -s "http://127.0.0.1:$http/metrics" | grep -E '^backlog_scaler_backend_read_duration_seconds_bucket.*redis-main' > "$work/buckets.txt"
  python3 - "$work" <<PY
import statistics, sys, re
work = sys.argv[1]
ages = {}
for line in open(f"{work}/age.txt"):
    m = re.match(r'backlog_scaler_measurement_age_seconds\{source="([^"]+)"\} (\S+)', line)
    if m: ages.setdefault(m[1], []).append(float(m[2]))
def p(v, q): v = sorted(v); return v[min(len(v) - 1, int(q * len(v)))]
for source, v in sorted(ages.items()):
    print(f"RESULT (4) age of the oldest served reading, {source}: p50 {p(v,.5):.3f} s, p99 {p(v,.99):.3f} s, max {max(v):.3f} s over {len(v)} samples every 100 ms (goal p99 <= 1.5 x refresh_interval = 1.5 s)")
def pct(name, q):
    return next(float(l.split()[1]) for l in open(name) if l.split()[:1] == [q])
ratios = []
for r in (1, 2, 3):
    g, h = pct(f"{work}/large-get-{r}.txt", "p99"), pct(f"{work}/large-health-{r}.txt", "p99")
    ratios.append(g / h)
print(f"RESULT (4) warm GetMetrics p99 / Health/Check p99 at the same load (4 x 256 callers): {', '.join(f'{x:.2f}' for x in ratios)} over 3 rounds (goal <= 10)")
reads = $reads1 - $reads0; secs = $t1 - $t0
print(f"RESULT (4) redis-main: {reads:.0f} batch reads in {secs:.1f} s ({reads/secs:.2f}/s), {($llen1 - $llen0)/secs:,.0f} LLEN/s, mean read {($dsum1-$dsum0)/max(1,$dcount1-$dcount0)*1000:.1f} ms, {$timeouts1-$timeouts0:.0f} timeouts (budget 1.5 s)")
PY
  sed 's/^/  /' "$work/buckets.txt"
  stop_scaler "$pid"
fi

# ---------------------------------------------------------------------------------------------
if want 5; then
  echo "== (5) cold GetMetrics p50 vs redis-benchmark LLEN p50 + Health/Check p50, 1 caller, 5 runs"
  start_scaler cold
  sleep 2
  target="127.0.0.1:$port"
  for run in 1 2 3 4 5; do
    loadgen --target "$target" --call get-metrics --cold --requests 2000 --connections 1 --concurrency 1 --duration 15 > "$work/cold.txt"
    loadgen --target "$target" --call get-metrics --cold --requests 40 --pace-ms 150 --connections 1 --concurrency 1 --duration 15 > "$work/cold-spaced.txt"
    loadgen --target "$target" --call health --connections 1 --concurrency 1 --duration 5 > "$work/health1.txt"
    loadgen --target "$target" --call health --requests 40 --pace-ms 150 --connections 1 --concurrency 1 --duration 15 > "$work/health-spaced.txt"
    redis-benchmark -p "$redis_port" -c 1 -n 20000 LLEN bench:queue:0 > "$work/llen.txt" 2>&1 || true
    llen_p50=$(awk '/latency summary/ {getline; getline; print $3}' "$work/llen.txt")
    cold_p50=$(awk '/p50/ {print $2; exit}' "$work/cold.txt"); cold_n=$(awk '/Count:/ {print $2}' "$work/cold.txt")
    spaced_p50=$(awk '/p50/ {print $2; exit}' "$work/cold-spaced.txt")
    health_p50=$(awk '/p50/ {print $2; exit}' "$work/health1.txt")
    hspaced_p50=$(awk '/p50/ {print $2; exit}' "$work/health-spaced.txt")
    echo "RESULT (5) run $run: back-to-back cold p50 $cold_p50 ms ($cold_n requests), LLEN p50 $llen_p50 ms, health p50 $health_p50 ms: ratio $(py "print(round($cold_p50/($llen_p50+$health_p50), 3))"); cold 150 ms apart p50 $spaced_p50 ms vs health 150 ms apart p50 $hspaced_p50 ms: ratio $(py "print(round($spaced_p50/($llen_p50+$hspaced_p50), 3))") (goal <= 1.2)"
  done
  stop_scaler "$pid"
fi

# ---------------------------------------------------------------------------------------------
if want 6; then
  echo "== (6) three replicas on one Redis: LLENs per second, 1 replica vs 3, 100 queues; agreement"
  start_scaler rep1; p1=$port; h1=$http; pid1=$pid
  rload() { loadgen --target "127.0.0.1:$1" --call get-metrics --connections 1 --concurrency 8 --scaled-objects 1000 --queues 100 --duration "$2" --no-warmup >/dev/null; }
  rload "$p1" 3
  sleep 1.5
  a0=$(llen_calls); ta0=$(date +%s.%N); rload "$p1" "$SECONDS_PER_LOAD"; ta1=$(date +%s.%N); a1=$(llen_calls)
  start_scaler rep2; p2=$port; pid2=$pid
  start_scaler rep3; p3=$port; pid3=$pid
  rload "$p2" 3 & w2=$!; rload "$p3" 3 & w3=$!; wait "$w2" "$w3"
  sleep 1.5
  b0=$(llen_calls); tb0=$(date +%s.%N)
  rload "$p1" "$SECONDS_PER_LOAD" & w1=$!; rload "$p2" "$SECONDS_PER_LOAD" & w2=$!; rload "$p3" "$SECONDS_PER_LOAD" & w3=$!
  wait "$w1" "$w2" "$w3"
  tb1=$(date +%s.%N); b1=$(llen_calls)
  py "
one = ($a1 - $a0) / ($ta1 - $ta0); three = ($b1 - $b0) / ($tb1 - $tb0)
print(f'RESULT (6) LLEN/s with 100 live measurements: 1 replica {one:.1f}, 3 replicas {three:.1f}: ratio {three/one:.2f} (goal 3.0)')"
  loadgen --target "127.0.0.1:$p1" --targets "127.0.0.1:$p1,127.0.0.1:$p2,127.0.0.1:$p3" \
    --watch-key bench:fresh:replicas --redis-url "redis://127.0.0.1:$redis_port/0" --jump 100 --trials 8 | tee "$work/agree.txt"
  echo "RESULT (6) $(grep Agreement "$work/agree.txt") (goal: within one refresh_interval, 1 s)"
  stop_scaler "$pid1"; stop_scaler "$pid2"; stop_scaler "$pid3"
fi
echo "== done $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
