#!/usr/bin/env bash
# Entrypoint of the compose stack's `replica` service: on first start (empty
# data directory) it makes a base copy of the primary ($PGSW_PRIMARY_HOST,
# default `db`) and configures a streaming hot standby with a physical slot
# ($PGSW_SLOT, default `replica`); then it runs the image's own entrypoint.
#
# The base copy uses pg_basebackup when the image has a 16 one (the official
# postgres:16 image). Otherwise (the kit's stand-in image, whose only
# pg_basebackup is version 15 and refuses a 16 server) it does what
# pg_basebackup does over SQL: pg_backup_start() in one session, every file
# of the data directory read with pg_read_binary_file(), pg_backup_stop()'s
# label written as backup_label. The WAL comes by streaming from the slot.
set -Eeuo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
primary="${PGSW_PRIMARY_HOST:-db}"
slot="${PGSW_SLOT:-replica}"
export PGHOST="$primary" PGUSER="${POSTGRES_USER:-postgres}" PGDATABASE=postgres
export PGPASSWORD="${POSTGRES_PASSWORD:?POSTGRES_PASSWORD must be set}"
log() { printf 'pgsw-replica: %s\n' "$*"; }

# Reads "kind<TAB>path<TAB>base64" lines and writes them under $PGDATA
# (directories come first, parents before children).
write_files() {
  if perl -MMIME::Base64 -e 1 2>/dev/null; then
    perl -MMIME::Base64 -ne '
      chomp; my ($kind, $path, $data) = split /\t/, $_, 3;
      my $file = "$ENV{PGDATA}/$path";
      if ($kind eq "d") { -d $file or mkdir $file or die "mkdir $file: $!"; next }
      open(my $fh, ">", $file) or die "$file: $!"; binmode $fh;
      print $fh decode_base64($data // ""); close $fh or die "$file: $!";'
  else
    while IFS=$'\t' read -r kind path data; do
      if [ "$kind" = d ]; then
        mkdir -p "$PGDATA/$path"
      else
        printf '%s' "$data" | base64 -d >"$PGDATA/$path"
      fi
    done
  fi
}

sql_base_copy() {
  local tmp session
  tmp="$(mktemp -d)"
  mkfifo "$tmp/in"
  # One session holds the backup open from start to stop.
  psql -qAtX -v ON_ERROR_STOP=1 <"$tmp/in" >"$tmp/out" 2>"$tmp/err" &
  session=$!
  exec 3>"$tmp/in"
  echo "SELECT pg_backup_start('pgsw-replica', true);" >&3
  until [ -s "$tmp/out" ]; do
    kill -0 "$session" 2>/dev/null || { cat "$tmp/err" >&2; return 1; }
    sleep 0.1
  done
  log "backup started at $(head -n1 "$tmp/out"); copying files over SQL"
  psql -qAtX -v ON_ERROR_STOP=1 -F $'\t' -c "
    WITH RECURSIVE tree(path, isdir) AS (
      SELECT e, (pg_stat_file(e, true)).isdir FROM pg_ls_dir('.', true, false) AS e
      UNION ALL
      SELECT t.path || '/' || e, (pg_stat_file(t.path || '/' || e, true)).isdir
      FROM tree t CROSS JOIN LATERAL pg_ls_dir(t.path, true, false) AS e
      WHERE t.isdir
        AND t.path NOT IN ('pg_wal', 'pg_replslot', 'pg_stat_tmp', 'pg_dynshmem', 'pg_notify',
                           'pg_serial', 'pg_snapshots', 'pg_subtrans', 'log')
        AND t.path NOT LIKE '%pgsql_tmp%'
    )
    SELECT CASE WHEN isdir THEN 'd' ELSE 'f' END, path,
           CASE WHEN isdir THEN '' ELSE
             coalesce(translate(encode(pg_read_binary_file(path, true), 'base64'), E'\n', ''), '') END
    FROM tree
    WHERE isdir IS NOT NULL
      AND path NOT IN ('postmaster.pid', 'postmaster.opts', 'backup_label', 'tablespace_map',
                       'current_logfiles', 'standby.signal')
      AND path NOT LIKE '%pg_internal.init'
    ORDER BY isdir DESC, path" | write_files
  mkdir -p "$PGDATA/pg_wal" "$PGDATA/pg_replslot"
  echo "SELECT '#LABEL#' || labelfile FROM pg_backup_stop(true);" >&3
  exec 3>&-
  wait "$session" || { cat "$tmp/err" >&2; return 1; }
  sed -n '/^#LABEL#/,$p' "$tmp/out" | sed '1s/^#LABEL#//' >"$PGDATA/backup_label"
  grep -q '^START WAL LOCATION' "$PGDATA/backup_label" || { log "no backup label"; return 1; }
  touch "$PGDATA/standby.signal"
  {
    echo "primary_conninfo = 'host=$primary port=5432 user=$PGUSER password=${PGPASSWORD//\'/\'\'} application_name=$slot'"
    echo "primary_slot_name = '$slot'"
  } >>"$PGDATA/postgresql.auto.conf"
  rm -rf "$tmp"
}

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  log "waiting for the primary at $primary"
  until pg_isready -q; do sleep 0.5; done
  until psql -qAtX -c 'SELECT 1' >/dev/null 2>&1; do sleep 0.5; done
  # Reserve WAL from now on, so the standby can stream everything after the copy.
  psql -qAtX -v ON_ERROR_STOP=1 -c "SELECT pg_create_physical_replication_slot('$slot', true)
    WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '$slot')" >/dev/null
  mkdir -p "$PGDATA"
  if pg_basebackup --version 2>/dev/null | grep -qE ' (1[6-9]|[2-9][0-9])(\.|$)'; then
    log "pg_basebackup from $primary"
    pg_basebackup -D "$PGDATA" -X stream -S "$slot" -R -c fast
  else
    sql_base_copy
  fi
  if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$PGDATA"; fi
  chmod 700 "$PGDATA"
  log "base copy done; starting as a hot standby"
fi
unset PGHOST PGUSER PGDATABASE PGPASSWORD
exec docker-entrypoint.sh "$@"
