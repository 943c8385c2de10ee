"""The HTTP transport of outbound requests (webhooks, HTTP targets): it resolves each host
itself, refuses the connection if ``rules.outbound`` refuses any address the name gives, and
connects to the addresses it checked. The check is made on every connection, after DNS, so a
name that resolved to a public address when its URL was given and to a private one now (DNS
rebinding) is refused. TLS still names the host (SNI and the certificate check), as does
the ``Host`` header. No proxy from the environment is used, and redirects are never followed
by the callers, so no request goes anywhere unchecked.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpcore
import httpx

from orchestrator.rules.outbound import OutboundRule, refused_text
from orchestrator.services.outbound import RESOLVE_TIMEOUT, Unresolved, resolve


class OutboundRefused(Exception):
    """A connection the outbound rule refuses; its text says why (never the address a name
    resolved to)."""


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's blocking backend, with each host resolved and checked before connecting."""

    def __init__(self, rule: OutboundRule) -> None:
        self._rule = rule
        self._inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Connect to the first checked address of ``host`` that answers."""
        try:
            addresses = resolve(host, port, timeout or RESOLVE_TIMEOUT)
        except Unresolved as exc:
            raise httpcore.ConnectError(str(exc)) from None
        # Every address, not only the one used: which one a retry would get is not ours to say.
        for address in addresses:
            kind = self._rule.refusal(address)
            if kind is not None:
                raise OutboundRefused(refused_text(host, kind))
        failure: httpcore.ConnectError | httpcore.ConnectTimeout | None = None
        for address in addresses:
            try:
                return self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None  # ``resolve`` gives at least one address
        raise failure

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        """Never: outbound requests go to network addresses only."""
        raise OutboundRefused("a Unix socket is not an outbound address")

    def sleep(self, seconds: float) -> None:
        """As the blocking backend sleeps."""
        self._inner.sleep(seconds)


def guarded_transport(rule: OutboundRule, limits: httpx.Limits) -> httpx.HTTPTransport:
    """An httpx transport (no proxy) whose every connection passes ``rule``."""
    transport = httpx.HTTPTransport(limits=limits)
    pool = transport._pool
    # httpx takes no network backend; its pool does. Refuse to start unguarded if that changes.
    if not isinstance(pool, httpcore.ConnectionPool) or not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpx version cannot take the outbound guard")
    pool._network_backend = _GuardedBackend(rule)
    return transport
