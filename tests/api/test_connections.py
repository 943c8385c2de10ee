"""The HTTP server's own bounds (``api/server.py``), on the live server the tests share with
``orchestrator serve``: a request head must arrive within ``ORCH_HEADER_TIMEOUT`` (a slowloris
client is cut off, a kept-alive client and an open event stream are not), a request body must
arrive within ``ORCH_BODY_TIMEOUT`` of its head (a trickled body is cut off), and past
``ORCH_MAX_CONNECTIONS`` open sockets a new one is answered 503 and closed.

The protocol does not touch the database: these run on SQLite only.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ..conftest import TEST_IMAGE, LiveServer, admin_token, bearer, wait_for

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

HEADER_TIMEOUT = 1.0


def connect(server: LiveServer) -> socket.socket:
    """A raw TCP connection to the server."""
    return socket.create_connection((server.settings.host, server.settings.port), timeout=30)


def request_head(server: LiveServer, path: str = "/healthz") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: {server.settings.host}\r\n\r\n".encode()


def read_response(sock: socket.socket) -> bytes:
    """One whole response (with a Content-Length body) from ``sock``."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(4096)
        assert chunk, "closed mid-body"
        body += chunk
    return head + b"\r\n\r\n" + body


def open_connections(server: LiveServer) -> int:
    """The sockets the server holds open now."""
    return len(server._server.server_state.connections)


def waiting_job(server: LiveServer) -> dict[str, Any]:
    """A job that stays unfinished (scheduled for tomorrow) until cancelled."""
    server.register({"name": "later", "image": TEST_IMAGE, "command": ["true"]})
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return server.submit(definition="later", schedule_at=tomorrow)


@contextmanager
def event_stream(server: LiveServer, job_id: str) -> Iterator[Iterator[str]]:
    """An open event stream of the job on a connection of its own; its lines."""
    headers = bearer(admin_token(server.settings))
    with httpx.Client(base_url=server.url, timeout=60, headers=headers) as client:
        url = f"/v1/projects/default/jobs/{job_id}/stream"
        with client.stream("GET", url) as response:
            assert response.status_code == 200
            yield response.iter_lines()


def until_event(lines: Iterator[str], wanted: str) -> None:
    """Read the stream until an event of type ``wanted`` (fails if the stream ends first)."""
    for line in lines:
        if line == f"event: {wanted}":
            return
    raise AssertionError(f"the stream ended before a '{wanted}' event")


def read_to_end(sock: socket.socket) -> bytes:
    """Everything ``sock`` receives until the server closes it."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass  # closed while our last bytes were on their way: what came before counts
    return data


def test_a_slowloris_client_is_cut_off_at_the_header_timeout(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(header_timeout=HEADER_TIMEOUT)
    job = waiting_job(server)
    with event_stream(server, job["id"]) as stream, connect(server) as slow:
        until_event(stream, "created")
        # One header byte at a time, far slower than any client sends a head; stop sending
        # once the server answers.
        for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([slow], [], [], 0.2)[0]:
                break
        answer = read_to_end(slow)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert b"ORCH_HEADER_TIMEOUT" in answer
        # A kept-alive connection idle for longer than the header timeout between two requests
        # (within the keep-alive timeout) serves the next one.
        with connect(server) as kept:
            kept.sendall(request_head(server))
            assert read_response(kept).startswith(b"HTTP/1.1 200")
            time.sleep(2 * HEADER_TIMEOUT)
            kept.sendall(request_head(server))
            assert read_response(kept).startswith(b"HTTP/1.1 200")
        # The event stream, open all along, still delivers.
        assert server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel").is_success
        until_event(stream, "cancelled")


def test_a_head_sent_in_time_in_pieces_is_served(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(header_timeout=HEADER_TIMEOUT)
    with connect(server) as sock:
        head = request_head(server)
        sock.sendall(head[:10])
        time.sleep(HEADER_TIMEOUT / 4)
        sock.sendall(head[10:])
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_a_silent_connection_is_closed(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(header_timeout=HEADER_TIMEOUT)
    with connect(server) as sock:
        assert read_to_end(sock).startswith(b"HTTP/1.1 408")


def test_connections_past_the_cap_are_refused(make_server: Callable[..., LiveServer]) -> None:
    # A generous header timeout: the held connection below must not be cut off meanwhile.
    server = make_server(max_connections=3, header_timeout=120)
    job = waiting_job(server)
    server.http.close()  # its kept-alive connection would take a place
    wait_for(lambda: open_connections(server) == 0)
    with ExitStack() as held:
        first = held.enter_context(event_stream(server, job["id"]))
        second = held.enter_context(event_stream(server, job["id"]))
        until_event(first, "created")
        until_event(second, "created")
        # The third: a request to cancel the job, its head not sent whole yet.
        token = admin_token(server.settings)
        cancel = (
            f"POST /v1/projects/default/jobs/{job['id']}/cancel HTTP/1.1\r\n"
            f"Host: x\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        third = held.enter_context(connect(server))
        third.sendall(cancel[:20])
        wait_for(lambda: open_connections(server) == 3)
        with httpx.Client(base_url=server.url, timeout=30) as extra:
            refused = extra.get("/healthz")
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["code"] == "too_many_connections"
        assert "ORCH_MAX_CONNECTIONS" in refused.json()["message"]
        # The connections that were open are served as before.
        third.sendall(cancel[20:])
        assert read_response(third).startswith(b"HTTP/1.1 200")
        until_event(first, "cancelled")
        until_event(second, "cancelled")
    wait_for(lambda: open_connections(server) == 0)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/healthz").status_code == 200


def test_a_body_trickled_slowly_is_cut_off_at_the_body_timeout(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(body_timeout=HEADER_TIMEOUT)
    token = admin_token(server.settings)
    body = b'{"definition": "nope"}'
    head = (
        f"POST /v1/projects/default/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with connect(server) as slow:
        slow.sendall(head)
        # A byte well within any gap a per-chunk timer would allow, but the whole body late.
        for byte in body[:-1]:
            try:
                slow.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if select.select([slow], [], [], HEADER_TIMEOUT / 4)[0]:
                break
        answer = read_to_end(slow)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b"ORCH_BODY_TIMEOUT" in answer
    # A body sent in time, in pieces, is served; the server goes on serving.
    with connect(server) as sock:
        sock.sendall(head + body[:5])
        time.sleep(HEADER_TIMEOUT / 4)
        sock.sendall(body[5:])
        assert read_response(sock).startswith(b"HTTP/1.1 404")
    assert server.http.get("/healthz").status_code == 200
