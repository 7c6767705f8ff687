#!/bin/sh
# `minio server DIR`: moto's S3 server on MinIO's port. It execs, so `docker stop`'s
# SIGTERM reaches the server.
set -e
if [ "$1" != server ]; then
    echo "minio stand-in: only 'minio server DIR' is supported" >&2
    exit 2
fi
exec /opt/moto/bin/moto_server -H 0.0.0.0 -p 9000
