# Stand-in for python:3.11-slim (see build.sh): Debian bookworm's Python 3.11 with pip
# and venv, `python` on PATH, and no EXTERNALLY-MANAGED marker, as the real image.
ARG BASE=modelfleet-standin/bookworm:minbase
FROM ${BASE}
# Unpinned, as the real images track bookworm's point and security releases.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y -q --no-install-recommends python3 python3-pip python3-venv python-is-python3 \
    && rm -rf /var/lib/apt/lists/* /usr/lib/python3.11/EXTERNALLY-MANAGED
# After the packages (ca-certificates would regenerate it): the host's bundle, copied
# into the build context by build.sh, so pip in builds on this image trusts what the host trusts.
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8
LABEL org.modelfleet.standin="python:3.11-slim from Debian bookworm packages"
CMD ["python3"]
