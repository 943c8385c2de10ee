# The orchestrator server in a container. It drives the host's Docker engine through the mounted
# socket, and copies each job's input and output with the Docker archive API (the engine does not
# see the container's files). It runs as a non-root user, who reaches the socket through the
# socket's group: pass it with --group-add (README, "Run it in a container").
#
#   docker build -t orchestrator .
#   docker run --detach --name orchestrator -p 127.0.0.1:8000:8000 \
#     -v /var/run/docker.sock:/var/run/docker.sock --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v orchestrator-data:/data orchestrator
#
# Build arguments: BASE, any image with Python 3.11+ and its venv module (CI uses a local Debian
# image from scripts/build-local-images: there is no registry there); OFFLINE, when not empty,
# installs from the wheels in wheels/ of the build context with no package index. Either way
# pip keeps to constraints.txt, the versions CI tested.
ARG BASE=python:3.12-slim

FROM ${BASE}
ARG OFFLINE=
# A fixed uid, so a data directory bind-mounted from the host can be given to it (chown 10001).
RUN groupadd --system --gid 10001 orchestrator \
 && useradd --system --uid 10001 --gid orchestrator --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin orchestrator \
 && mkdir -m 0700 /data \
 && chown orchestrator:orchestrator /data
# One stage: the sources (and wheels) stay in a layer of their own, and a build leaves no
# intermediate image behind.
COPY . /src
RUN python3 -m venv /opt/orchestrator \
 && if [ -n "$OFFLINE" ]; then \
      /opt/orchestrator/bin/pip install --no-cache-dir --no-index --find-links /src/wheels \
        --constraint /src/constraints.txt 'orchestrator[postgres]'; \
    else \
      /opt/orchestrator/bin/pip install --no-cache-dir --constraint /src/constraints.txt \
        '/src[postgres]'; \
    fi \
 && rm -rf /src
# PATH in full: an imported base image (docker import) has none to extend.
ENV PATH=/opt/orchestrator/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8000 \
    ORCH_DATA_DIR=/data
USER orchestrator
# The SQLite database, the secret key, the admin token and the runner's name.
VOLUME /data
EXPOSE 8000
# Unhealthy when /healthz fails: 503 is a database that does not answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('ORCH_PORT', '8000'), timeout=4)"]
CMD ["orchestrator", "serve"]
