#!/usr/bin/env bash
# Start a real, throwaway PostgreSQL server on loopback for the store tests.
# Prints ONE line on stdout: the SQLAlchemy URL to export as RERANKER_TEST_PG_URL.
# Idempotent: a second call reuses the running server. Stop with: .ci/postgres.sh stop
# Knobs: PG_PORT (55432), PG_DIR (/tmp/reranker-pg), PG_DB (reranker_test).
set -euo pipefail
PORT="${PG_PORT:-55432}"
DIR="${PG_DIR:-/tmp/reranker-pg}"
DB="${PG_DB:-reranker_test}"
URL="postgresql+psycopg://postgres@127.0.0.1:${PORT}/${DB}"
log() { echo "postgres.sh: $*" >&2; }

# The Debian package; the server binaries live under /usr/lib/postgresql/<major>/bin.
bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
if [ -z "$(bindir)" ] || [ ! -x "$(bindir)/postgres" ]; then
  log "installing the postgresql Debian package"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
fi
BIN="$(bindir)"

# initdb/postgres refuse to run as root: run them as the 'postgres' system user when we are root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" postgres
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

if [ "${1:-}" = stop ]; then
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true
  exit 0
fi

mkdir -p "$DIR"
[ "$(id -u)" = 0 ] && { id postgres >/dev/null 2>&1 || useradd --system --home-dir "$DIR" postgres; chown postgres "$DIR"; }
if [ ! -f "$DIR/data/PG_VERSION" ]; then
  log "initdb in $DIR/data"
  # trust auth is fine: the server listens on loopback only and holds test data only.
  as_pg "$BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 >/dev/null
fi
if ! as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
  log "starting on 127.0.0.1:$PORT"
  as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR -c max_connections=200 -c fsync=off" start >&2
fi
for _ in $(seq 1 30); do
  "$BIN/pg_isready" -h 127.0.0.1 -p "$PORT" -q && break
  sleep 0.5
done
if ! "$BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='$DB'" | grep -q 1; then
  "$BIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres "$DB"
fi
echo "$URL"
