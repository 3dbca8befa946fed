# Sourced by every benches/*.sh script, after `set -euo pipefail`: the project root as the
# working directory, a temp dir `$work` and a `pids` list that the EXIT trap cleans up,
# free ports, waiting for a port, and the few helpers more than one script needs.
#
#   source "$(dirname "$0")/lib/prelude.sh"
#
# Every server a bench starts is appended to `pids`; on exit (normal, error or Ctrl-C) each
# is killed and waited for, and `$work` removed.

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# A TCP port free on 127.0.0.1 right now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Waits (up to 10 s) until something accepts connections on 127.0.0.1:PORT; exits otherwise.
wait_port() {
  for _ in $(seq 200); do
    (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "port $1 never opened" >&2
  exit 1
}

# Resident memory of PID, in KiB.
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# One line naming the machine, the time and its load, for the record of a run.
machine_line() {
  echo "== machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB," \
    "$(lscpu | sed -n 's/Model name: *//p'), $(date -u +%FT%TZ)," \
    "load average $(cut -d' ' -f1-3 /proc/loadavg)"
}

# Builds the release binary and the load generator; sets `loadgen_bin` to the load
# generator's own executable (not `cargo bench` per call: a source edit mid-run would rebuild
# it there, and signals must reach the generator itself).
build_release_and_loadgen() {
  cargo build --release --locked --quiet
  loadgen_bin=$(cargo bench --locked --no-run --bench loadgen --message-format=json 2>/dev/null |
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "loadgen" and m.get("executable"):
        print(m["executable"])')
  [ -x "$loadgen_bin" ] || { echo "the loadgen bench did not build" >&2; exit 1; }
}

# A throwaway redis-server on a free port, in `$work`; sets `redis_port` and `redis_pid`.
start_redis() {
  redis_port=${redis_port:-$(free_port)}
  redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" \
    >>"$work/redis.log" &
  redis_pid=$!
  pids+=("$redis_pid")
  wait_port "$redis_port"
}

# A throwaway PostgreSQL (the newest installed) with pg_stat_statements and a `scaler` role
# in pg_monitor, run as the postgres user when this runs as root; sets `pg_port` and defines
# `psql_pg SQL`.
start_postgres() {
  pg_port=$(free_port)
  chmod 755 "$work" # the postgres user must reach its data dir inside
  local pg_bin
  pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  mkdir -p "$work/pg"
  if [ "$(id -u)" = 0 ]; then chown -R postgres: "$work/pg"; fi
  as_pg "$pg_bin/initdb" -D "$work/pg/data" -U postgres -A trust --no-sync >/dev/null
  as_pg "$pg_bin/postgres" -D "$work/pg/data" -p "$pg_port" -k "$work/pg" \
    -c listen_addresses=127.0.0.1 -c shared_preload_libraries=pg_stat_statements \
    -c fsync=off >"$work/pg/log" 2>&1 &
  pids+=($!)
  wait_port "$pg_port"
  for _ in $(seq 100); do
    psql_pg "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.1
  done
  psql_pg "CREATE EXTENSION pg_stat_statements; CREATE ROLE scaler LOGIN; GRANT pg_monitor TO scaler;"
}
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; else "$@"; fi; }
psql_pg() { psql -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres -qAtX -c "$1"; }

# The request bodies of perf2.sh's goal 1 and of instructions.sh, written to DIR:
# `get-metrics.bin`, a warm GetMetrics of one `redis-list` trigger on `bench:queue:3` with 4
# metadata entries, and `health.bin`, an empty Health/Check. Each is one gRPC message: a
# 5-byte frame header (not compressed, big-endian length) + the protobuf.
write_grpc_bodies() {
  python3 - "$1" <<'PY'
import struct, sys
def field(n, b): return bytes([n << 3 | 2]) + varint(len(b)) + b
def varint(v):
    out = b""
    while True:
        if v < 0x80: return out + bytes([v])
        out += bytes([v & 0x7f | 0x80]); v >>= 7
meta = {"source": "redis-main", "metric": "redis-list", "keys": "bench:queue:3", "target": "10"}
so = field(1, b"worker-0") + field(2, b"bench") + b"".join(
    field(3, field(1, k.encode()) + field(2, v.encode())) for k, v in meta.items())
for name, body in (("get-metrics.bin", field(1, so)), ("health.bin", b"")):
    open(f"{sys.argv[1]}/{name}", "wb").write(b"\0" + struct.pack(">I", len(body)) + body)
PY
}
