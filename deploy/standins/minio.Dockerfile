# Stand-in for minio/minio and minio/mc (see build.sh), for deploy/compose.s3.yml:
# moto's S3 server (the server tests/integration/test_s3.py already uses), from PyPI on
# the Python image. `minio server DIR` serves S3 on :9000 (moto keeps objects in memory
# and accepts any keys: a stand-in for tests, not a store); `mc ready ALIAS` and
# `mc mb [--ignore-existing] ALIAS/BUCKET` do what the compose file asks of mc.
ARG BASE=python:3.11-slim
FROM ${BASE}
COPY ca-certificates.crt /tmp/ca-certificates.crt
RUN python -m venv /opt/moto \
    && PIP_CERT=/tmp/ca-certificates.crt /opt/moto/bin/pip install -q --no-cache-dir 'moto[server]>=5,<6' \
    && rm /tmp/ca-certificates.crt
COPY minio-standin.sh /usr/local/bin/minio
COPY mc-standin.py /usr/local/bin/mc
EXPOSE 9000
LABEL org.modelfleet.standin="MinIO: moto's S3 server on Debian bookworm's Python"
ENTRYPOINT ["minio"]
CMD ["server", "/data"]
