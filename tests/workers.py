"""A local HTTP worker image for tests: busybox's httpd serving a CGI script steered by the input.

Built FROM the busybox test image (``tests/conftest.py``), no registry needed. The container
serves on port ``WORKER_PORT``; ``WORKER_PATH`` takes a POST whose JSON body says what to do
(keys are looked for at the top level, values kept simple):

- ``{"echo": ...}`` (or anything else): 200 with the request body itself as JSON,
- ``{"status": 500}``: that status, with a JSON body,
- ``{"sleep": 3}``: sleep that many seconds before answering,
- ``{"die": true}``: kill the httpd (the container exits) without answering; ``{"die": 1}``
  only when serving attempt 1 (the ``X-Orch-Attempt`` header),
- ``{"text": "hello"}``: 200 with the plain-text body ``hello``.

Every request writes ``worker served: <body>`` to the container's stderr. ``READY_PATH`` is a
static file for readiness checks; env ``START_DELAY`` (seconds) delays the server's start.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker
import pytest

WORKER_IMAGE = "orch-test-worker:1"
WORKER_PORT = 8080
WORKER_PATH = "/cgi-bin/run"
READY_PATH = "/ready.txt"

DOCKERFILE = """\
FROM {base}
COPY www /www
COPY start.sh /start.sh
CMD ["/bin/sh", "/start.sh"]
"""

# PID 1 is this shell: killing the httpd ends the container.
START = """\
sleep "${START_DELAY:-0}"
httpd -f -p 8080 -h /www &
echo $! > /tmp/httpd.pid
echo "worker listening on 8080" >&2
wait
"""

# Stderr goes to the container's own stderr (PID 1's), whatever httpd does with a CGI's stderr.
CGI = """\
#!/bin/sh
exec 2>/proc/1/fd/2
body=$(head -c "${CONTENT_LENGTH:-0}")
echo "worker served: $body" >&2
field() { printf '%s' "$body" | sed -n "s/.*\\"$1\\": *\\"\\{0,1\\}\\([^\\",}]*\\).*/\\1/p"; }
delay=$(field sleep)
[ -n "$delay" ] && sleep "$delay"
die=$(field die)
if [ "$die" = "true" ] || [ "$die" = "${HTTP_X_ORCH_ATTEMPT:-}" ]; then
    kill -9 "$(cat /tmp/httpd.pid)"
    sleep 5
    exit 1
fi
status=$(field status)
text=$(field text)
if [ -n "$status" ]; then
    printf 'Status: %s Worker Status\\r\\nContent-Type: application/json\\r\\n\\r\\n' "$status"
    printf '{"status": %s}' "$status"
elif [ -n "$text" ]; then
    printf 'Content-Type: text/plain\\r\\n\\r\\n%s' "$text"
else
    printf 'Content-Type: application/json\\r\\n\\r\\n%s' "$body"
fi
"""


def build_worker_image(client: docker.DockerClient, base: str, tag: str = WORKER_IMAGE) -> str:
    """Build the worker image FROM ``base`` (the busybox test image); its tag."""
    with tempfile.TemporaryDirectory() as root:
        context = Path(root)
        (context / "Dockerfile").write_text(DOCKERFILE.format(base=base))
        (context / "start.sh").write_text(START)
        cgi_bin = context / "www" / "cgi-bin"
        cgi_bin.mkdir(parents=True)
        (context / "www" / READY_PATH.lstrip("/")).write_text("ready\n")
        script = cgi_bin / WORKER_PATH.rsplit("/", 1)[1]
        script.write_text(CGI)
        script.chmod(0o755)
        client.images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    return tag


@pytest.fixture(scope="session")
def worker_image(docker_client: docker.DockerClient, busybox_image: str) -> str:
    """The tag of the local HTTP worker image (built once per session)."""
    return build_worker_image(docker_client, busybox_image)


def worker_definition(name: str, image: str, **worker: object) -> dict[str, object]:
    """A definition of the test worker; ``worker`` overrides the worker section's fields."""
    return {
        "name": name,
        "image": image,
        "worker": {"port": WORKER_PORT, "path": WORKER_PATH, **worker},
    }
