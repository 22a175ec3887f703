#!/bin/sh
# slidead-catalog's entrypoint: make the cluster on the first start, then run PostgreSQL in the
# foreground (arguments go to postgres, e.g. -c listen_addresses=127.0.0.1 -c port=5432).
set -eu
BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  if [ -z "${POSTGRES_PASSWORD:-}" ]; then
    echo "slidead-catalog: POSTGRES_PASSWORD is not set: the catalog needs a password for its user" >&2
    exit 1
  fi
  pw=$(mktemp)
  printf '%s\n' "$POSTGRES_PASSWORD" >"$pw"
  "$BIN/initdb" -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pw" --auth-host=scram-sha-256 --auth-local=peer \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pw"
  echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"   # workers on other hosts, with the password
  echo "CREATE DATABASE \"$POSTGRES_DB\" OWNER \"$POSTGRES_USER\";" \
    | "$BIN/postgres" --single -D "$PGDATA" -c unix_socket_directories=/tmp postgres >/dev/null
  echo "slidead-catalog: made the cluster in $PGDATA (database $POSTGRES_DB, user $POSTGRES_USER)"
fi
exec "$BIN/postgres" -D "$PGDATA" -c unix_socket_directories=/tmp "$@"
