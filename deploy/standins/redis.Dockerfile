# Stand-in for redis:7 (see build.sh): Debian bookworm's redis-server 7.0 and redis-cli,
# behind a docker-entrypoint.sh that, as the real image's, drops root for the redis user.
ARG BASE=modelfleet-standin/bookworm:minbase
FROM ${BASE}
# Unpinned, as the real images track bookworm's point and security releases.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y -q --no-install-recommends redis-server \
    && rm -rf /var/lib/apt/lists/* \
    && mkdir /data && chown redis:redis /data
COPY redis-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /data
WORKDIR /data
EXPOSE 6379
LABEL org.modelfleet.standin="redis:7 from Debian bookworm packages"
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
