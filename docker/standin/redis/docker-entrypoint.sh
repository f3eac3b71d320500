#!/bin/sh
# Entrypoint of the pgsw-standin/redis:7 image: like the official redis
# image, `redis-server` (or bare options) runs as the redis user in /data;
# any other command runs as given.
set -e
case "$1" in
  -*) set -- redis-server "$@" ;;
esac
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
  find . \! -user redis -exec chown redis '{}' + 2>/dev/null || :
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
