"""A real HTTP server on localhost for tests: it records every request and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Answer:
    status: int = 200
    body: bytes = b'{"ok": true}'
    delay: float = 0.0


@dataclass
class Receiver:
    """Records requests in ``received``; ``answer`` decides each response (by request)."""

    url: str
    received: list[Received] = field(default_factory=list)
    answer: Callable[[Received], Answer] = lambda _request: Answer()

    def answer_with(self, *statuses: int, then: int = 200) -> None:
        """Answer the next requests with ``statuses`` in turn, then ``then`` for ever."""
        script = list(statuses)

        def answer(_request: Received) -> Answer:
            return Answer(status=script.pop(0) if script else then)

        self.answer = answer

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} requests in {timeout} s")
            time.sleep(0.02)
        return list(self.received)


def start_receiver() -> tuple[Receiver, Callable[[], None]]:
    """Start a receiver on a free port; returns it and its stop function."""
    receiver = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            request = Received(
                method=self.command,
                path=self.path,
                headers={k.lower(): v for k, v in self.headers.items()},
                body=self.rfile.read(length) if length else b"",
            )
            receiver.received.append(request)
            answer = receiver.answer(request)
            if answer.delay:
                time.sleep(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass  # quiet

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        server.server_close()

    return receiver, stop


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver for the test, stopped at its end."""
    made, stop = start_receiver()
    yield made
    stop()
