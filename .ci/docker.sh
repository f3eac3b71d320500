#!/usr/bin/env bash
# Make a Docker engine available on a Debian 12 machine without systemd.
#
#   .ci/docker.sh            # idempotent: does nothing if `docker info` works
#
# If no engine answers: installs Debian's docker.io (Engine 20.10) when
# missing, starts dockerd in the background (log + pidfile under /tmp), waits
# until `docker info` answers, prints the engine version. Also makes sure
# `debootstrap` is installed (docker/standin/build.sh needs it).
#
# Environment:
#   PGSW_DOCKER_TIMEOUT   seconds to wait for the engine (default 60)
#   PGSW_DOCKERD_LOG      dockerd log file   (default /tmp/pgsw-dockerd.log)
#   PGSW_DOCKERD_PIDFILE  dockerd pidfile    (default /tmp/pgsw-dockerd.pid)
#   PGSW_WITH_COMPOSE=1   also install Debian's docker-compose (1.29, v1 CLI)
#
# Client/engine note: a newer `docker` client (e.g. 28.x in /usr/local/bin)
# negotiates the API version down to the 20.10 engine (API 1.41) on its own.
# If a client ever refuses, set DOCKER_API_VERSION=1.41 or use /usr/bin/docker.
# To stop the engine this script started: kill "$(cat /tmp/pgsw-dockerd.pid)".
set -euo pipefail

TIMEOUT="${PGSW_DOCKER_TIMEOUT:-60}"
LOG="${PGSW_DOCKERD_LOG:-/tmp/pgsw-dockerd.log}"
PIDFILE="${PGSW_DOCKERD_PIDFILE:-/tmp/pgsw-dockerd.pid}"
export PATH="$PATH:/usr/sbin:/sbin"
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1

t0=$(date +%s.%N)
log() { printf '[docker.sh] %s\n' "$*" >&2; }
elapsed() { awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
is_root() { [ "$(id -u)" = 0 ]; }

APT_UPDATED=0
apt_install() {
  is_root || { log "need root to apt-get install $*"; exit 1; }
  if [ "$APT_UPDATED" = 0 ]; then
    log "apt-get update"
    apt-get update -qq
    APT_UPDATED=1
  fi
  log "apt-get install -y $*"
  apt-get install -y -qq "$@" >/dev/null
}

docker_ok() { docker info >/dev/null 2>&1; }

engine_version() {
  docker version --format \
    'engine {{.Server.Version}} (API {{.Server.APIVersion}}), client {{.Client.Version}} (API {{.Client.APIVersion}})' \
    2>/dev/null || docker version
}

# Tools needed besides the engine.
want=()
command -v debootstrap >/dev/null 2>&1 || want+=(debootstrap)
if [ "${PGSW_WITH_COMPOSE:-0}" = 1 ] && ! command -v docker-compose >/dev/null 2>&1; then
  want+=(docker-compose)
fi

if docker_ok; then
  if [ "${#want[@]}" -gt 0 ]; then
    if is_root; then apt_install "${want[@]}"; else log "WARNING: missing ${want[*]} (not root, not installing)"; fi
  fi
  log "engine already running: $(engine_version)"
  exit 0
fi

if [ -n "${DOCKER_HOST:-}" ] && [ "${DOCKER_HOST}" != "unix:///var/run/docker.sock" ]; then
  log "DOCKER_HOST=${DOCKER_HOST} is set but 'docker info' fails; this script starts a local"
  log "engine on unix:///var/run/docker.sock. Unset DOCKER_HOST if that is what you want."
  exit 1
fi

is_root || { log "no Docker engine answers and we are not root: cannot start dockerd"; exit 1; }

command -v dockerd >/dev/null 2>&1 || want+=(docker.io)
[ "${#want[@]}" -eq 0 ] || apt_install "${want[@]}"
command -v docker >/dev/null 2>&1 || { log "docker client missing after install"; exit 1; }

# Mount cgroups like Debian's /etc/init.d/docker does, when nothing did yet.
if [ -e /proc/cgroups ] && [ -d /sys/fs/cgroup ] \
  && ! grep -qE '^[^ ]+ /sys/fs/cgroup(/[^ ]*)? (cgroup|cgroup2) ' /proc/mounts; then
  log "mounting cgroup hierarchies"
  mountpoint -q /sys/fs/cgroup || mount -t tmpfs -o uid=0,gid=0,mode=0755 cgroup /sys/fs/cgroup
  (
    cd /sys/fs/cgroup
    for sys in $(awk '!/^#/ { if ($4 == 1) print $1 }' /proc/cgroups); do
      mkdir -p "$sys"
      mountpoint -q "$sys" || mount -n -t cgroup -o "$sys" cgroup "$sys" || rmdir "$sys" || true
    done
  )
fi

t_engine=$(date +%s.%N)
# The pid of a dockerd that is running now, from the pidfile; empty when the
# file is missing or stale (a dockerd of an earlier session left it behind,
# and its pid may since belong to another program).
live_dockerd_pid() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 0
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && echo "$pid"
  return 0
}

dockerd_pid=$(live_dockerd_pid)
if [ -n "$dockerd_pid" ]; then
  log "dockerd already started (pid $dockerd_pid), waiting for it"
else
  # A stale pidfile would make the wait below think the new dockerd had
  # already exited (it writes its own pid only once it is up).
  rm -f "$PIDFILE"
  log "starting dockerd (log: $LOG, pidfile: $PIDFILE)"
  ulimit -n 1048576 2>/dev/null || true
  # setsid + nohup: the daemon outlives this script and its session.
  setsid nohup dockerd --pidfile "$PIDFILE" >>"$LOG" 2>&1 </dev/null &
  dockerd_pid=$!
fi

deadline=$(( $(date +%s) + TIMEOUT ))
until docker_ok; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "ERROR: Docker engine did not answer within ${TIMEOUT}s. Last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  if ! kill -0 "$dockerd_pid" 2>/dev/null; then
    log "ERROR: dockerd (pid $dockerd_pid) exited. Last lines of $LOG:"
    tail -n 30 "$LOG" >&2 || true
    exit 1
  fi
  sleep 0.2
done

log "engine answered $(awk -v a="$t_engine" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s after start; total $(elapsed)s"
log "engine ready: $(engine_version)"
