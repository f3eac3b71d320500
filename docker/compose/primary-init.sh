#!/usr/bin/env bash
# /docker-entrypoint-initdb.d script of the compose stack's `db` service (the
# primary of the replica pair): lets other hosts on the stack's network
# connect for streaming replication, with the password (the official
# postgres image only allows ordinary connections from other hosts).
set -Eeuo pipefail
if ! grep -qE '^host[[:space:]]+replication[[:space:]]+all[[:space:]]+all' "$PGDATA/pg_hba.conf"; then
  printf 'host replication all all scram-sha-256\n' >>"$PGDATA/pg_hba.conf"
fi
