#!/usr/bin/env bash
# Entrypoint of the pgsw-standin/postgres:16 image. Emulates the parts of the
# official postgres image's entrypoint that the workshop kit relies on:
#   POSTGRES_PASSWORD (required unless POSTGRES_HOST_AUTH_METHOD=trust),
#   POSTGRES_USER (default postgres), POSTGRES_DB (default = user),
#   POSTGRES_INITDB_ARGS, POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD,
#   *_FILE variants, PGDATA, /docker-entrypoint-initdb.d/*.{sh,sql,sql.gz},
#   a temporary socket-only server during init, `postgres` run as the
#   postgres user (uid 999) with the container's arguments passed through.
set -Eeo pipefail

log() { printf '%s\n' "$*"; }
err() { printf '%s\n' "$*" >&2; }

# file_env VAR [DEFAULT]: VAR or the contents of the file named by VAR_FILE.
file_env() {
  local var="$1" fileVar="${1}_FILE" def="${2:-}"
  if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
    err "error: both $var and $fileVar are set (but are exclusive)"
    exit 1
  fi
  local val="$def"
  if [ "${!var:-}" ]; then
    val="${!var}"
  elif [ "${!fileVar:-}" ]; then
    val="$(<"${!fileVar}")"
  fi
  export "$var"="$val"
  unset "$fileVar"
}

setup_env() {
  file_env POSTGRES_PASSWORD
  file_env POSTGRES_USER postgres
  file_env POSTGRES_DB "$POSTGRES_USER"
  file_env POSTGRES_INITDB_ARGS
  : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"
  : "${PGDATA:=/var/lib/postgresql/data}"
  export PGDATA POSTGRES_HOST_AUTH_METHOD
  DATABASE_ALREADY_EXISTS=
  if [ -s "$PGDATA/PG_VERSION" ]; then DATABASE_ALREADY_EXISTS=true; fi
}

create_db_directories() {
  local user
  user="$(id -u)"
  mkdir -p "$PGDATA"
  chmod 00700 "$PGDATA" || :
  mkdir -p /var/run/postgresql || :
  chmod 03775 /var/run/postgresql || :
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
    mkdir -p "$POSTGRES_INITDB_WALDIR"
    if [ "$user" = 0 ]; then
      find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres '{}' +
    fi
    chmod 700 "$POSTGRES_INITDB_WALDIR"
  fi
  if [ "$user" = 0 ]; then
    find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
    find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
  fi
}

verify_minimum_env() {
  if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
    cat >&2 <<'EOM'
Error: Database is uninitialized and superuser password is not specified.
       You must specify POSTGRES_PASSWORD to a non-empty value for the
       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".

       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all
       connections without a password. This is *not* recommended.
       (pgsw-standin/postgres:16 emulates the official postgres image.)
EOM
    exit 1
  fi
  if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
    err "WARNING: POSTGRES_HOST_AUTH_METHOD=trust: every connection is accepted without a password."
  fi
}

init_database_dir() {
  if ! getent passwd "$(id -u)" >/dev/null; then
    err "error: uid $(id -u) has no passwd entry; the stand-in image has no nss_wrapper (run as root or 999)"
    exit 1
  fi
  local args=()
  if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then args+=(--waldir "$POSTGRES_INITDB_WALDIR"); fi
  # POSTGRES_INITDB_ARGS is word-split on purpose, like the official image.
  if [ -n "$POSTGRES_PASSWORD" ]; then
    eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") "${args[@]}" '"$POSTGRES_INITDB_ARGS"
  else
    eval 'initdb --username="$POSTGRES_USER" "${args[@]}" '"$POSTGRES_INITDB_ARGS"
  fi
}

# The npm build's compiled socket default is /tmp; Debian's psql/pg_isready
# (and the official image) use /var/run/postgresql.
setup_socket_dir_conf() {
  {
    echo
    echo "# pgsw-standin: socket directory of the official image"
    echo "unix_socket_directories = '/var/run/postgresql'"
  } >>"$PGDATA/postgresql.conf"
}

setup_hba_conf() {
  {
    echo
    if [ "$POSTGRES_HOST_AUTH_METHOD" = trust ]; then
      echo '# warning trust is enabled for all connections'
    fi
    printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
    printf 'host replication all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
  } >>"$PGDATA/pg_hba.conf"
}

# docker_process_sql [psql args...]: same helper name as the official image,
# usable from sourced /docker-entrypoint-initdb.d/*.sh scripts.
docker_process_sql() {
  local query_runner=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
  if [ -n "$POSTGRES_DB" ]; then query_runner+=(--dbname "$POSTGRES_DB"); fi
  PGHOST= PGHOSTADDR= "${query_runner[@]}" "$@"
}

temp_server_start() {
  # Socket-only server for the init phase; the container's own -c options
  # apply to it as well.
  set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
  PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

temp_server_stop() {
  PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

setup_db() {
  local exists
  exists="$(POSTGRES_DB=postgres docker_process_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only <<-'EOSQL'
		SELECT 1 FROM pg_database WHERE datname = :'db' ;
	EOSQL
  )"
  if [ -z "$exists" ]; then
    POSTGRES_DB=postgres docker_process_sql --dbname postgres --set db="$POSTGRES_DB" <<-'EOSQL'
			CREATE DATABASE :"db" ;
		EOSQL
    echo
  fi
}

process_init_files() {
  local f
  echo
  for f in "$@"; do
    case "$f" in
      *.sh)
        if [ -x "$f" ]; then
          log "$0: running $f"
          "$f"
        else
          log "$0: sourcing $f"
          # shellcheck disable=SC1090
          . "$f"
        fi
        ;;
      *.sql) log "$0: running $f"; docker_process_sql -f "$f"; echo ;;
      *.sql.gz) log "$0: running $f"; gunzip -c "$f" | docker_process_sql; echo ;;
      *.sql.xz)
        command -v xzcat >/dev/null || { err "$0: $f: xzcat is not in the stand-in image"; exit 1; }
        log "$0: running $f"; xzcat "$f" | docker_process_sql; echo ;;
      *.sql.zst)
        command -v zstd >/dev/null || { err "$0: $f: zstd is not in the stand-in image"; exit 1; }
        log "$0: running $f"; zstd -dc "$f" | docker_process_sql; echo ;;
      *) log "$0: ignoring $f" ;;
    esac
    echo
  done
}

main() {
  # `docker run img -c fsync=off` means `postgres -c fsync=off`.
  if [ "${1:0:1}" = '-' ]; then set -- postgres "$@"; fi

  if [ "$1" != postgres ]; then
    exec "$@"
  fi
  shift # the server arguments remain in "$@"

  setup_env
  create_db_directories
  if [ "$(id -u)" = 0 ]; then
    # Restart this script as the postgres user (the official image uses gosu).
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$BASH_SOURCE" postgres "$@"
  fi

  if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
    verify_minimum_env
    shopt -s nullglob
    local init_files=(/docker-entrypoint-initdb.d/*)
    shopt -u nullglob
    init_database_dir
    setup_socket_dir_conf
    setup_hba_conf
    export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
    temp_server_start "$@"
    setup_db
    process_init_files "${init_files[@]}"
    temp_server_stop
    unset PGPASSWORD
    echo
    log 'PostgreSQL init process complete; ready for start up.'
    echo
  else
    echo
    log 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
    echo
  fi

  exec postgres "$@"
}

main "$@"
