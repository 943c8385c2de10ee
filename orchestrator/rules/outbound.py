"""Which addresses the server's outbound requests (webhooks, schedules' HTTP targets) may reach.

By default only public addresses: loopback, link-local (cloud metadata included), private,
shared (CGNAT), unspecified, multicast and reserved ones are refused, so a URL cannot make the
server call itself or its neighbours. ``ORCH_OUTBOUND_ALLOW_NETWORKS`` lists the networks a
deployment needs anyway. Pure: the callers resolve names and ask about each address.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

SETTING = "ORCH_OUTBOUND_ALLOW_NETWORKS"

# Addresses a cloud answers its instance-metadata service on (credentials live there).
METADATA = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# The kinds refused, each with its networks, in the order an address is looked up.
KINDS: tuple[tuple[str, tuple[IPNetwork, ...]], ...] = tuple(
    (kind, tuple(ipaddress.ip_network(n) for n in networks))
    for kind, networks in (
        ("loopback", ("127.0.0.0/8", "::1/128")),
        ("link-local", ("169.254.0.0/16", "fe80::/10")),
        ("private", ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")),
        ("shared (CGNAT)", ("100.64.0.0/10",)),
        ("unspecified", ("0.0.0.0/8", "::/128")),
        ("multicast", ("224.0.0.0/4", "ff00::/8")),
        ("reserved", ("240.0.0.0/4",)),
    )
)
# Kinds whose addresses are this host itself (or its cloud's metadata service) whatever the
# route: an image registry there is refused by the container policy too.
LOCAL_KINDS = frozenset({"loopback", "link-local", "cloud metadata", "unspecified"})
# IPv6 prefixes that carry an IPv4 address in their last 32 bits (NAT64's well-known prefix).
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def kind_of(address: IPAddress) -> str | None:
    """What makes ``address`` non-public (``loopback``, ``private``, ...), None if public.

    An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is what it carries;
    any other address the IANA registries mark as not globally reachable is ``reserved``.
    """
    if address in METADATA:
        return "cloud metadata"
    for kind, networks in KINDS:
        if any(address in network for network in networks):
            return kind
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        return kind_of(embedded)
    if not address.is_global:
        return "reserved"
    return None


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class OutboundRule:
    """The networks outbound requests may reach beyond the public ones."""

    allowed: tuple[IPNetwork, ...] = ()

    def refusal(self, address: IPAddress) -> str | None:
        """The kind that refuses ``address`` (``loopback``, ...), None if it may be reached: it
        is public, or inside an allowed network (as itself or the IPv4 it carries)."""
        embedded = _embedded_ipv4(address)
        for candidate in (address, embedded):
            if candidate is not None and any(candidate in n for n in self.allowed):
                return None
        return kind_of(address)


def refused_text(host: str, kind: str) -> str:
    """Why a request to ``host`` is refused. For a name, the address it resolved to is not
    said: an answer must not map the server's internal names to their addresses."""
    article = "an" if kind[0] in "aeiou" else "a"
    what = f"{host.strip('[]')} is" if literal_address(host) is not None else f"{host} resolves to"
    return f"{what} {article} {kind} address, refused unless {SETTING} allows it"


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    """The comma-separated CIDRs of ``value`` (``127.0.0.0/8,10.0.0.0/8``; an address alone is
    its own network); ValueError naming the first that is not one."""
    networks = []
    for item in (part.strip() for part in value.split(",")):
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(f"'{item}' is not a network in CIDR form ({exc})") from None
    return tuple(networks)


def literal_address(host: str) -> IPAddress | None:
    """The address a host name written as an IP literal stands for, None for a name: IPv6
    (bracketed or not) and IPv4 in every form the C library reads (``127.1``,
    ``2130706433``, ``0x7f000001``, ``0177.0.0.1``), so no spelling slips past a check."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not host or not all(c.isalnum() or c == "." for c in host):
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None
