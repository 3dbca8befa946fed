#!/usr/bin/env bash
# The database time of one pg_stat_statements snapshot, as the scaler takes it, at 1,000 and
# 5,000 entries (pg_stat_statements.max = 5000, PostgreSQL's default).
#
# Starts a throwaway PostgreSQL (the newest under /usr/lib/postgresql) on a free port in a temp
# dir, fills pg_stat_statements with N distinct statements of an application role, then runs
# the scaler's snapshot statement (read from src/sources/postgres/statements.rs, so it cannot
# drift) ROUNDS times per variant as the superuser, and prints pg_stat_statements' own figure
# for it: mean and standard deviation of the execution time, rows per call. Removes
# everything at the end.
#
# Usage: benches/statements_snapshot.sh [ROUNDS]   (default 30)
set -euo pipefail

ROUNDS=${1:-30}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DIR=$(mktemp -d)
chmod 755 "$DIR"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

as_server() {
  if [ "$(id -u)" = 0 ]; then
    chown -R postgres:postgres "$DIR"
    setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  else
    "$@"
  fi
}
cleanup() {
  as_server "$BIN/pg_ctl" -D "$DIR/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$DIR"
}
trap cleanup EXIT

as_server "$BIN/initdb" -D "$DIR/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
as_server "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/log" -w start -o \
  "-p $PORT -c listen_addresses=127.0.0.1 -k $DIR -c shared_preload_libraries=pg_stat_statements \
   -c pg_stat_statements.max=5000 -c compute_query_id=on -c fsync=off" >/dev/null

psql_as() { "$BIN/psql" -X -q -h 127.0.0.1 -p "$PORT" -U "$1" -d postgres -v ON_ERROR_STOP=1 "${@:2}"; }

SNAPSHOT_SQL=$(sed -n '/^pub const SNAPSHOT_SQL: &str = "\\$/,/";$/p' \
  "$ROOT/src/sources/postgres/statements.rs" | sed '1d; $s/";$//')

psql_as postgres -c "CREATE EXTENSION pg_stat_statements; CREATE ROLE app LOGIN;" \
  -c "DO \$\$ BEGIN FOR i IN 1..5000 LOOP EXECUTE format('CREATE TABLE t_%s (x int)', i); END LOOP; END \$\$;" \
  -c "GRANT SELECT ON ALL TABLES IN SCHEMA public TO app"

echo "PostgreSQL $("$BIN/postgres" --version | awk '{print $3}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), commit $(git -C "$ROOT" rev-parse --short HEAD)"
for N in 1000 5000; do
  psql_as postgres -c "SELECT pg_stat_statements_reset()" >/dev/null
  # N distinct statements of the application (one queryid per table), each run once.
  seq 1 $((N - 40)) | sed 's/.*/SELECT count(*) FROM t_&;/' | psql_as app >/dev/null
  for variant in "false, NULL, NULL, NULL" "true, NULL, NULL, NULL" "false, ARRAY['app_db'], NULL, NULL"; do
    {
      echo "PREPARE snap(bool, text[], text[], int8[]) AS $SNAPSHOT_SQL;"
      for _ in $(seq 1 "$ROUNDS"); do echo "EXECUTE snap($variant);"; done
    } | psql_as postgres >/dev/null
    psql_as postgres -At -F ' ' -c "
      SELECT (SELECT count(*) FROM pg_stat_statements),
             calls, round(mean_exec_time::numeric, 2), round(stddev_exec_time::numeric, 2),
             round(rows::numeric / calls, 0)
      FROM pg_stat_statements WHERE query LIKE 'PREPARE snap%'" |
      while read -r entries calls mean stddev rows; do
        echo "RESULT entries=$entries args=($variant) calls=$calls mean_ms=$mean stddev_ms=$stddev rows_per_call=$rows"
      done
    psql_as postgres -c "SELECT pg_stat_statements_reset(0, 0, queryid) FROM pg_stat_statements WHERE query LIKE 'PREPARE snap%'" >/dev/null
  done
done
