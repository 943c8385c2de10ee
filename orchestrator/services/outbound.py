"""Outbound URLs checked when they are given: a webhook's, a schedule's HTTP target's. The host
is resolved (in bounded time) and every address it gives must pass ``rules.outbound``; the
sender checks again the address it connects to (``background.outbound``).

Called before a transaction is opened: a slow resolver must not hold the database.
"""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

from orchestrator.errors import InvalidRequest
from orchestrator.rules.outbound import IPAddress, OutboundRule, literal_address, refused_text
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.schedules import ScheduleTarget

# Seconds a name may take to resolve when a URL is given; past it the name passes (the sender
# checks the address it connects to anyway).
RESOLVE_TIMEOUT = 5.0


class Unresolved(Exception):
    """The name did not resolve (no such name, or not in time)."""


def resolve(host: str, port: int, timeout: float) -> list[IPAddress]:
    """Every address ``host`` stands for (an IP literal in any spelling is its own), in the
    resolver's order; ``Unresolved`` when it gives none within ``timeout`` seconds."""
    literal = literal_address(host)
    if literal is not None:
        return [literal]
    found: list[IPAddress] = []
    failure: list[str] = []

    def lookup() -> None:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            failure.append(str(exc) or type(exc).__name__)
            return
        for info in infos:
            address = literal_address(str(info[4][0]))
            if address is not None and address not in found:
                found.append(address)

    # getaddrinfo has no timeout of its own: a thread that is left behind if it hangs.
    thread = threading.Thread(target=lookup, name="resolve", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise Unresolved(f"{host} did not resolve within {timeout:g} s")
    if failure or not found:
        raise Unresolved(f"{host} does not resolve ({failure[0] if failure else 'no address'})")
    return found


def check_url(rule: OutboundRule, url: str, field: str) -> None:
    """Refuse (400 naming ``field``) a URL whose host is, or resolves to, an address ``rule``
    refuses. A name that does not resolve now passes: it is checked when it is connected to."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return  # the URL's own validation speaks of it
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        addresses = resolve(host, port, RESOLVE_TIMEOUT)
    except Unresolved:
        return
    for address in addresses:
        kind = rule.refusal(address)
        if kind is not None:
            raise InvalidRequest(f"{field}: {refused_text(host, kind)}", field=field)


def check_submission(rule: OutboundRule, request: JobCreate, prefix: str = "") -> None:
    """Check the webhook URL of a job submission (field ``<prefix>webhook``)."""
    if request.webhook is not None:
        check_url(rule, str(request.webhook), f"{prefix}webhook")


def check_schedule_target(rule: OutboundRule, target: ScheduleTarget | None) -> None:
    """Check the URLs of a schedule's target: its HTTP request's, its job's webhook."""
    if target is None:
        return
    if target.http is not None:
        check_url(rule, str(target.http.url), "target.http.url")
    if target.job is not None:
        check_submission(rule, target.job, "target.job.")
