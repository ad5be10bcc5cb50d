# netmon-exporter container image.
#   docker build -t netmon-exporter:0.1.0 .
#   docker run -p 9864:9864 -v /srv/captures:/captures:ro netmon-exporter:0.1.0
# Runs as the unprivileged user "netmon" (uid 10001); the capture directory only needs to
# be readable by it (writable too if capture.after_processing is move or delete).

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY netmon_exporter ./netmon_exporter
RUN python -m venv /opt/netmon-exporter \
 && /opt/netmon-exporter/bin/pip install --no-compile . \
 && /opt/netmon-exporter/bin/netmon-exporter --version

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="netmon-exporter" \
      org.opencontainers.image.description="Packet captures in; flows, detections and Prometheus metrics out" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 netmon \
 && useradd --system --uid 10001 --gid netmon --home-dir /var/lib/netmon-exporter \
      --shell /usr/sbin/nologin netmon \
 && mkdir -p /captures /var/lib/netmon-exporter/state /var/lib/netmon-exporter/output \
      /var/cache/netmon-exporter/numba /etc/netmon-exporter \
 && chown -R netmon:netmon /var/lib/netmon-exporter /var/cache/netmon-exporter
COPY --from=build /opt/netmon-exporter /opt/netmon-exporter
COPY deploy/docker/config.yaml /etc/netmon-exporter/config.yaml
ENV PATH=/opt/netmon-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/netmon-exporter/numba
USER netmon:netmon
WORKDIR /var/lib/netmon-exporter
VOLUME ["/var/lib/netmon-exporter"]
EXPOSE 9864
# /-/healthy answers 200 while the process serves HTTP; /health (503 when unhealthy) is
# for Prometheus and humans, so a missing capture mount alerts instead of restart-looping.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9864/-/healthy', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["netmon-exporter"]
CMD ["--config.file=/etc/netmon-exporter/config.yaml", "--web.listen-address=:9864", "--log.format=logfmt"]
