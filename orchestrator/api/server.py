"""The HTTP server, assembled in one place for ``orchestrator serve`` and the tests' live server:
uvicorn speaking HTTP/1.1 through h11, with a protocol that bounds connections.

uvicorn bounds the idle time between two requests (its keep-alive timeout) but not the time a
client takes to send a request head, so a client sending one header byte a second holds a
socket for as long as it likes (slowloris). ``GuardedH11Protocol`` closes a connection whose
request head is not complete ``ORCH_HEADER_TIMEOUT`` seconds after the connection opened, or
after the first byte of a later request on a kept-alive connection (a ``408``). A request
body, likewise, must be complete ``ORCH_BODY_TIMEOUT`` seconds after its head (a body trickled
a byte at a time holds no socket for long either); its size is bounded by ``api/limits.py``. A
response (a log or event stream) runs as long as it needs.

It also refuses a connection while ``ORCH_MAX_CONNECTIONS`` others are open (streams and idle
kept-alive ones included): the new one gets a ``503`` with ``Retry-After`` and is closed, and
the open ones are served as before. uvicorn's ``limit_concurrency`` is not used: it decides
when a request head arrives, so during a flood the next request of a client already served,
on its own kept-alive connection, would be refused too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import signal
import sys
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from orchestrator.api.error_shapes import error_body
from orchestrator.config import Settings

logger = logging.getLogger(__name__)

# What uvicorn.run exits with when the server did not start (the lifespan failed, the port is
# taken): the same code, so scripts see no difference.
STARTUP_FAILURE = 3
# Seconds a stopping server lets open requests (streams) finish before it cancels them.
GRACEFUL_SHUTDOWN = 5
# The signals that stop a server gracefully.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _answer(status: str, body: dict[str, Any], *headers: str) -> bytes:
    # A whole response written on a connection h11 has not parsed a request of (or will not).
    content = json.dumps(body).encode()
    head = [
        f"HTTP/1.1 {status}",
        "content-type: application/json",
        f"content-length: {len(content)}",
        "connection: close",
        *headers,
    ]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + content


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head and a cap on connections.

    ``protocol_for`` makes the subclass that carries a server's settings.
    """

    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_connections: int = 1000

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body_deadline: asyncio.TimerHandle | None = None
        # Refused at connect: answered 503 once its request arrives, never served.
        self.refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        """Count the connection; past the cap, mark it refused. Either way its head's deadline
        starts now."""
        # Refused connections still open (waiting for their request) take no one's place.
        served = sum(1 for other in self.connections if not getattr(other, "refused", False))
        super().connection_made(transport)
        if served >= self.max_connections:
            self.refused = True
            logger.info(
                "refused a connection: %d are open (ORCH_MAX_CONNECTIONS)",
                served,
                extra={"action": "connection_refused"},
            )
        self._arm()

    def data_received(self, data: bytes) -> None:
        """Feed h11; a request head still incomplete keeps (or starts) its deadline, a complete
        one ends it. A refused connection gets its 503 instead."""
        if self.refused:
            # Answered after its request is read, so the client reads the 503 and no reset.
            self.transport.write(self._refusal())
            self._close()
            return
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm()
        else:
            self._disarm()
        if self.conn.their_state is h11.SEND_BODY and not self.transport.is_closing():
            if self._body_deadline is None:
                self._body_deadline = self.loop.call_later(self.body_timeout, self._body_too_late)
        else:
            self._disarm_body()

    def connection_lost(self, exc: Exception | None) -> None:
        """Forget the deadlines with the connection."""
        self._disarm()
        self._disarm_body()
        super().connection_lost(exc)

    def _disarm_body(self) -> None:
        if self._body_deadline is not None:
            self._body_deadline.cancel()
            self._body_deadline = None

    def _body_too_late(self) -> None:
        self._body_deadline = None
        if self.transport.is_closing():
            return
        logger.info(
            "closed a connection whose request body took longer than %g s",
            self.body_timeout,
            extra={"action": "request_body_timed_out"},
        )
        # The route is still waiting for the body, so no response has begun.
        if self.conn.our_state is h11.SEND_RESPONSE:
            message = (
                f"the request body was not complete within {self.body_timeout:g} s of its head "
                "(ORCH_BODY_TIMEOUT)"
            )
            self.transport.write(
                _answer("408 Request Timeout", error_body("request_timeout", message))
            )
        self._close()

    def _arm(self) -> None:
        if self._head_deadline is None:
            self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_late)

    def _disarm(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_late(self) -> None:
        self._head_deadline = None
        if self.transport.is_closing():
            return
        if not self.refused:
            logger.info(
                "closed a connection whose request head took longer than %g s",
                self.header_timeout,
                extra={"action": "request_head_timed_out"},
            )
            message = (
                f"the request head was not complete within {self.header_timeout:g} s "
                "(ORCH_HEADER_TIMEOUT)"
            )
            self.transport.write(
                _answer("408 Request Timeout", error_body("request_timeout", message))
            )
        self._close()

    def _refusal(self) -> bytes:
        message = (
            f"the server has {self.max_connections} connections open, the most "
            "ORCH_MAX_CONNECTIONS allows: try again later"
        )
        body = error_body("too_many_connections", message)
        return _answer("503 Service Unavailable", body, "retry-after: 1")

    def _close(self) -> None:
        # Tell h11 too, so connection_lost finds it closed rather than mid-request.
        if self.conn.our_state not in (h11.ERROR, h11.CLOSED):
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:
                pass  # mid-response on our side: closing is all that is left
        self.transport.close()


def protocol_for(settings: Settings) -> type[GuardedH11Protocol]:
    """The protocol class of a server with these settings (uvicorn builds one per connection)."""

    class Configured(GuardedH11Protocol):
        header_timeout = settings.header_timeout
        body_timeout = settings.body_timeout
        max_connections = settings.max_connections

    return Configured


def build(app: FastAPI, settings: Settings, *, log_level: str = "info") -> uvicorn.Server:
    """The server of ``app`` on ``ORCH_HOST:ORCH_PORT`` (over TLS with ``ORCH_TLS_CERT`` and
    ``ORCH_TLS_KEY``), not started yet. Forwarded headers are believed from the proxies of
    ``ORCH_FORWARDED_ALLOW_IPS`` only: uvicorn's own default believes 127.0.0.1, where any
    local process could claim HTTPS for a plain request."""
    proxies = settings.forwarded_allow_ips.strip()
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=protocol_for(settings),
        lifespan="on",
        log_level=log_level,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or None,
        ssl_certfile=settings.tls_cert,
        ssl_keyfile=settings.tls_key,
    )
    return uvicorn.Server(config)


@contextlib.contextmanager
def _stop_signals_handled() -> Iterator[None]:
    """SIGINT and SIGTERM, once uvicorn has finished its graceful shutdown, do nothing more.

    uvicorn (0.29+) raises a signal it shut down for again after restoring the handlers it
    found, so the process would then die of it (143, or 130 through the CLI): a stop that was
    asked for and carried out is a success, exit 0, for ``docker stop``, systemd and scripts.
    """
    previous = {sig: signal.signal(sig, lambda _sig, _frame: None) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run(app: FastAPI, settings: Settings) -> None:
    """Serve ``app`` until SIGINT or SIGTERM stops it (exit 0 once shut down); exit with
    ``STARTUP_FAILURE`` if it cannot start."""
    server = build(app, settings)
    # What is loaded by now (modules, classes, the app and its routes) lives as long as the
    # process: out of the garbage collector's way, a full collection has less to walk, and
    # with a thousand streams open such a collection stalled every request for tens of ms.
    gc.collect()
    gc.freeze()
    with _stop_signals_handled():
        server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)
