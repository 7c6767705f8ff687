#!/usr/bin/env bash
# Stand-ins for the base images the compose stack names, built from Debian packages,
# for a machine whose Docker engine cannot reach an image registry (docs/scale-out.md,
# "Behind a firewall"). Each is used only when the real image cannot be pulled: an
# image already in the engine (real or stand-in) is kept, then `docker pull` is tried,
# and only if that fails is the stand-in built under the real image's name. The
# project's own deploy/Dockerfile and docker-compose.yml are not touched.
#
#   deploy/standins/build.sh              # python:3.11-slim and redis:7
#   deploy/standins/build.sh s3           # also the MinIO images of deploy/compose.s3.yml
#
# Needs root (debootstrap) and network access to a Debian mirror (DEBIAN_MIRROR).
# The host's CA bundle (CA_BUNDLE) is copied into each build at build time, never
# into the repository: pip inside the builds reaches the package index through it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
base=modelfleet-standin/bookworm:minbase
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security="${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

present() { docker image inspect "$1" >/dev/null 2>&1; }

# A bookworm minbase, debootstrapped once and imported: the engine keeps it, so later
# runs (and the other stand-ins) reuse it.
build_base() {
    present "$base" && return
    command -v debootstrap >/dev/null || apt-get install -y -q debootstrap
    local root
    root="$(mktemp -d)"
    debootstrap --variant=minbase bookworm "$root" "$mirror"
    printf '%s\n' "deb $mirror bookworm main" "deb $mirror bookworm-updates main" \
        "deb $security bookworm-security main" > "$root/etc/apt/sources.list"
    # As Docker's own Debian images: package scripts start no services in a build, and
    # packages installed later bring no documentation, man pages or translations.
    printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
        'path-exclude /usr/share/man/*' 'path-exclude /usr/share/info/*' \
        'path-exclude /usr/share/locale/*' > "$root/etc/dpkg/dpkg.cfg.d/docker-slim"
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/*
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin
    tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$base"
    rm -rf "$root"
}

# standin TAG DOCKERFILE: the real TAG if it is here or can be pulled, else the stand-in.
standin() {
    local tag="$1" dockerfile="$2" context
    if present "$tag"; then
        echo "$tag: already in the engine (labels: $(docker image inspect -f '{{json .Config.Labels}}' "$tag"))"
        return
    fi
    if timeout "${PULL_TIMEOUT:-60}" docker pull -q "$tag" 2>/dev/null; then
        return
    fi
    echo "$tag: cannot be pulled; building the stand-in ($dockerfile)"
    build_base
    context="$(mktemp -d)"
    cp "$here"/* "$context"/
    cp "$ca_bundle" "$context/ca-certificates.crt"
    # The MinIO stand-in builds on the Python image; the others on the Debian base.
    if [ "$dockerfile" = minio.Dockerfile ]; then
        docker build -q -t "$tag" -f "$context/$dockerfile" "$context"
    else
        docker build -q --build-arg "BASE=$base" -t "$tag" -f "$context/$dockerfile" "$context"
    fi
    rm -rf "$context"
}

standin python:3.11-slim python.Dockerfile
standin redis:7 redis.Dockerfile
if [ "${1:-}" = s3 ]; then
    # The MinIO server and client tags the override names; one stand-in serves both.
    for tag in $(sed -n 's/^ *image: *\(minio\/.*\)$/\1/p' "$here/../compose.s3.yml"); do
        standin "$tag" minio.Dockerfile
    done
fi
