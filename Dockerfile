# netmon-exporter container image.
#   docker build -t netmon-exporter:0.1.0 .
#   docker run -p 127.0.0.1:9864:9864 -v /srv/captures:/captures:ro netmon-exporter:0.1.0
# Runs as the unprivileged user "netmon" (uid 10001); the capture directory only needs to
# be readable by it (writable too if capture.after_processing is move or delete).
#
# The image does not create /captures: mount the capture directory there. Without a mount
# the daemon refuses to start ("capture.directory: /captures does not exist") and exits 1,
# rather than watching an empty directory and looking healthy (deploy/README.md).
#
# Dependencies come from deploy/docker/requirements.txt (pinned, with hashes), so a
# rebuild installs the same packages.

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY deploy/docker/requirements.txt ./requirements.txt
RUN python -m venv /opt/netmon-exporter \
 && /opt/netmon-exporter/bin/pip install --no-compile --require-hashes --no-deps \
      -r requirements.txt
COPY pyproject.toml README.md ./
COPY netmon_exporter ./netmon_exporter
# The build context has no .git: say which commit this is, as Prometheus's images do
# (docker build --build-arg REVISION=$(git rev-parse HEAD) \
#   --build-arg BRANCH=$(git rev-parse --abbrev-ref HEAD) ...); --version and
# netmon_build_info report it, and the build date.
ARG REVISION=unknown
ARG BRANCH=unknown
RUN /opt/netmon-exporter/bin/python -m netmon_exporter.build_info \
      --revision "$REVISION" --branch "$BRANCH"
RUN /opt/netmon-exporter/bin/pip install --no-compile --no-deps --no-build-isolation \
      --no-index . \
 && /opt/netmon-exporter/bin/pip check \
 && /opt/netmon-exporter/bin/netmon-exporter --version
# Build the kernels ahead of time into the installed package (netmon_exporter/_aot), for
# the architecture's generic CPU (the image runs on other machines than it is built on):
# numba's pycc needs a C compiler, which only this stage has. Processes then run them
# without importing numba (compiled.py); the runtime stage warms numba's cache too, for
# whatever the build does not serve.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/* \
 && NUMBA_CACHE_DIR=/tmp/numba-build NETMON_AOT_CPU=generic /opt/netmon-exporter/bin/python \
      -m netmon_exporter.ingest.warm_pipeline \
 && test -f /opt/netmon-exporter/lib/python3.11/site-packages/netmon_exporter/_aot/manifest.json \
 && rm -rf /tmp/numba-build

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="netmon-exporter" \
      org.opencontainers.image.description="Packet captures in; flows, detections and Prometheus metrics out" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 netmon \
 && useradd --system --uid 10001 --gid netmon --home-dir /var/lib/netmon-exporter \
      --shell /usr/sbin/nologin netmon \
 && mkdir -p /var/lib/netmon-exporter/state /var/lib/netmon-exporter/output \
      /var/cache/netmon-exporter/numba /etc/netmon-exporter \
 && chown -R netmon:netmon /var/lib/netmon-exporter /var/cache/netmon-exporter
COPY --from=build /opt/netmon-exporter /opt/netmon-exporter
COPY deploy/docker/config.yaml /etc/netmon-exporter/config.yaml
ENV PATH=/opt/netmon-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    NUMBA_CACHE_DIR=/var/cache/netmon-exporter/numba
USER netmon:netmon
# compile the flow engine into the image's numba cache too: a kernel met with argument
# types the build lacks does not pay a first compile either
RUN python -m netmon_exporter.ingest.warm_pipeline
WORKDIR /var/lib/netmon-exporter
VOLUME ["/var/lib/netmon-exporter"]
EXPOSE 9864
# /health answers 503 while a critical check fails (the capture directory vanished or is
# unreadable, state or output not writable), so `docker ps` shows "unhealthy"; Prometheus
# pages through NetmonUnhealthy. Docker itself does not restart unhealthy containers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9864/health', timeout=4).status == 200 else 1)"]
ENTRYPOINT ["netmon-exporter"]
CMD ["--config.file=/etc/netmon-exporter/config.yaml", "--web.listen-address=:9864", "--log.format=logfmt"]
