"""A Docker engine that cannot be reached: the server starts, says so, and jobs wait queued.

The runner reaches the real engine through a TCP proxy owned by the test, so the test can take
the engine "down" and bring it back without touching the real one.
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ..conftest import LiveServer, free_port, wait_for

DOCKER_SOCKET = "/var/run/docker.sock"


class _Forward(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.connect(DOCKER_SOCKET)
        sockets = [self.request, upstream]
        try:
            while True:
                readable, _, _ = select.select(sockets, [], [], 1.0)
                if getattr(self.server, "closing", False):
                    return
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    (upstream if sock is self.request else self.request).sendall(data)
        except OSError:
            return
        finally:
            upstream.close()


class EngineProxy:
    """A TCP port that forwards to the local Docker socket while it is up."""

    def __init__(self) -> None:
        self.port = free_port()
        self._server: socketserver.ThreadingTCPServer | None = None

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def up(self) -> None:
        socketserver.ThreadingTCPServer.allow_reuse_address = True
        server = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), _Forward)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self._server = server

    def down(self) -> None:
        if self._server is not None:
            self._server.closing = True  # type: ignore[attr-defined]
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def proxy() -> Iterator[EngineProxy]:
    engine = EngineProxy()
    yield engine
    engine.down()


def health(server: LiveServer) -> dict[str, Any]:
    response = server.http.get("/healthz")
    assert response.status_code == 200
    return dict(response.json())


def test_server_starts_without_docker_and_jobs_wait_until_it_returns(
    make_server: Any, proxy: EngineProxy
) -> None:
    server = make_server(docker_host=proxy.url)
    down = wait_for(lambda: (h := health(server))["docker"] == "unavailable" and h, timeout=10)
    assert down["status"] == "degraded"
    assert down["database"] == "ok"
    assert "cannot be reached" in down["docker_error"]

    server.register({"name": "hello", "image": "busybox:1.36", "command": ["echo", "back"]})
    job = server.submit(definition="hello")
    # Several engine checks (every 0.5 s here) go by; the job is neither claimed nor failed.
    since = datetime.fromisoformat(down["docker_unavailable_since"])
    wait_for(lambda: datetime.now(UTC) - since > timedelta(seconds=2), timeout=10)
    assert health(server)["docker"] == "unavailable"
    assert server.job(job["id"])["status"] == "queued"
    assert [e["type"] for e in server.events(job["id"])] == ["created", "queued"]

    proxy.up()
    done = server.wait_job(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert server.logs(job["id"]) == "back\n"
    assert health(server)["docker"] == "ok"
    assert health(server)["status"] == "ok"
