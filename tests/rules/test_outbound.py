"""The outbound rule (which addresses webhooks and HTTP targets may reach), its setting, the
image registries the container policy refuses, and how an engine's message is quoted."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest
from pydantic import ValidationError

from orchestrator.cli.output import setting_errors
from orchestrator.config import Settings
from orchestrator.errors import PolicyRefused
from orchestrator.rules.outbound import (
    OutboundRule,
    literal_address,
    parse_networks,
    refused_text,
)
from orchestrator.rules.policy import ContainerPolicy, local_registry
from orchestrator.rules.quoting import QUOTE_CHARS, short_quote


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.255.0.9", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "cloud metadata"),
        ("fd00:ec2::254", "cloud metadata"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("172.31.255.254", "private"),
        ("192.168.1.1", "private"),
        ("fc00::1", "private"),
        ("fd12:3456::1", "private"),
        ("100.64.0.1", "shared (CGNAT)"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("192.0.2.1", "reserved"),  # documentation
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("::ffff:169.254.169.254", "cloud metadata"),
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:7f00:1::1", "loopback"),  # 6to4 of 127.0.0.1
        ("8.8.8.8", None),
        ("172.32.0.1", None),
        ("2001:4860:4860::8888", None),
        ("::ffff:8.8.8.8", None),
    ],
)
def test_each_address_is_refused_for_its_kind_or_allowed(address: str, kind: str | None) -> None:
    assert OutboundRule().refusal(ipaddress.ip_address(address)) == kind


def test_allowed_networks_let_their_addresses_through() -> None:
    rule = OutboundRule(parse_networks("127.0.0.0/8, 10.0.0.0/8,fd00::/8"))
    for allowed in ("127.0.0.1", "10.200.0.1", "::ffff:127.0.0.1", "fd00:ec2::254"):
        assert rule.refusal(ipaddress.ip_address(allowed)) is None, allowed
    for still in ("::1", "169.254.169.254", "192.168.0.1", "172.16.0.1"):
        assert rule.refusal(ipaddress.ip_address(still)) is not None, still


def test_a_network_that_is_not_one_is_named() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" 10.0.0.1 ,") == (ipaddress.ip_network("10.0.0.1/32"),)
    for bad, said in (("10.0.0.1/8", "host bits set"), ("ten", "'ten'"), ("10.0.0.0/33", "/33")):
        with pytest.raises(ValueError, match="is not a network in CIDR form") as caught:
            parse_networks(f"127.0.0.0/8,{bad}")
        assert said in str(caught.value)


def test_a_bad_setting_stops_the_start_naming_its_variable(tmp_path: Path) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path, outbound_allow_networks="127.0.0.0/8,10.0.0.1/8")
    text = setting_errors(caught.value)
    assert "ORCH_OUTBOUND_ALLOW_NETWORKS: '10.0.0.1/8' is not a network in CIDR form" in text
    settings = Settings(data_dir=tmp_path, outbound_allow_networks="10.0.0.0/8")
    assert settings.outbound_rule().allowed == (ipaddress.ip_network("10.0.0.0/8"),)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
        ("example.com", None),
        ("localhost", None),
        ("", None),
        ("1.2.3.4 x", None),
    ],
)
def test_every_spelling_of_an_address_is_read_as_it(host: str, address: str | None) -> None:
    expected = ipaddress.ip_address(address) if address else None
    assert literal_address(host) == expected


def test_a_refusal_never_says_what_a_name_resolved_to() -> None:
    assert refused_text("db.internal", "private") == (
        "db.internal resolves to a private address, refused unless "
        "ORCH_OUTBOUND_ALLOW_NETWORKS allows it"
    )
    assert refused_text("[::]", "unspecified").startswith(":: is an unspecified address")


@pytest.mark.parametrize(
    ("image", "registry"),
    [
        ("127.0.0.1:5000/app", "127.0.0.1:5000"),
        ("127.0.0.1/app:1", "127.0.0.1"),
        ("localhost:5000/app", "localhost:5000"),
        ("localhost/app", "localhost"),
        ("LOCALHOST:5000/app", "LOCALHOST:5000"),
        ("registry.localhost/app", "registry.localhost"),
        ("[::1]:5000/app", "[::1]:5000"),
        ("169.254.169.254/app", "169.254.169.254"),
        ("[fe80::1]:5000/app", "[fe80::1]:5000"),
        ("0.0.0.0:5000/app", "0.0.0.0:5000"),
        ("2130706433:5000/app", "2130706433:5000"),
        ("127.1:5000/app", "127.1:5000"),
        ("busybox:1.36", None),
        ("library/busybox", None),
        ("localhost", None),  # Docker Hub's image named localhost
        ("registry.example.com/app", None),
        ("10.0.0.5:5000/app", None),  # a private registry is a deployment's own
        ("ghcr.io/owner/app@sha256:" + "0" * 64, None),
    ],
)
def test_local_registries_are_found_in_image_references(image: str, registry: str | None) -> None:
    assert local_registry(image) == registry


def test_the_policy_refuses_a_local_registry_unless_allowed() -> None:
    container = {"image": "127.0.0.1:5000/app"}
    with pytest.raises(PolicyRefused) as caught:
        ContainerPolicy().check(container)
    assert caught.value.field == "image"
    assert caught.value.message == (
        "image: an image from the registry 127.0.0.1:5000 (this host's own services, or its "
        "cloud's metadata, would be asked for it) is not allowed by the server's policy "
        "(ORCH_POLICY_ALLOW_LOCAL_REGISTRIES allows it)"
    )
    ContainerPolicy(allow_local_registries=True).check(container)


def test_a_foreign_message_is_quoted_as_one_short_line() -> None:
    assert short_quote("manifest unknown") == "manifest unknown"
    assert short_quote("\n\n  first\tline \x1b[31mred\x1b[0m\x07\nsecond") == "first line red"
    long = short_quote("x" * 1000 + "\nsecond")
    assert len(long) == QUOTE_CHARS and long.endswith("…")
    assert short_quote("") == ""
