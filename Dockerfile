# The orchestrator server in a container. It drives the host's Docker engine through the mounted
# socket, and copies job input and output with the Docker archive API (no bind mounts needed):
#   docker run -d -p 8000:8000 -v /var/run/docker.sock:/var/run/docker.sock \
#     -v orchestrator-data:/data orchestrator
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY orchestrator ./orchestrator
COPY definitions ./definitions
RUN pip install --no-cache-dir '.[postgres]'
ENV ORCH_HOST=0.0.0.0 \
    ORCH_PORT=8000 \
    ORCH_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["orchestrator", "serve"]
