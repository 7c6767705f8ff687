#!/bin/sh
# The redis:7 stand-in's entrypoint, with the real image's behaviour: options alone
# (`--appendonly yes`, `-`) or a .conf file run redis-server; redis-server started as
# root first owns /data, then re-executes itself as the redis user. Every step execs,
# so redis-server ends as PID 1 (or init's child) and gets `docker stop`'s SIGTERM.
set -e
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi
if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
umask 0077
exec "$@"
