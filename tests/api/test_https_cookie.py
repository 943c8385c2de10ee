"""The console's sign-in cookie is Secure exactly when the request came over HTTPS: served
over TLS (``ORCH_TLS_CERT``/``ORCH_TLS_KEY``, a self-signed certificate made here), or
forwarded as HTTPS by a proxy the server trusts (``ORCH_FORWARDED_ALLOW_IPS``); never for plain
HTTP, and never on a client's word when no proxy is trusted (the default). Both databases."""

from __future__ import annotations

import datetime
import ipaddress
import re
import ssl
import threading
from collections.abc import Callable, Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.api import create_app
from orchestrator.api.server import build as build_server
from orchestrator.config import Settings
from tests.conftest import admin_token, wait_for


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def serve(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Settings]]:
    """Start `orchestrator serve`'s server (no runner) with the given settings; its settings."""
    running: list[tuple[Any, threading.Thread]] = []

    def start(**overrides: Any) -> Settings:
        settings = make_settings(runner_enabled=False, **overrides)
        server = build_server(create_app(settings), settings, log_level="warning")
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        wait_for(lambda: server.started, timeout=30)
        running.append((server, thread))
        return settings

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(30)


def session_cookie(client: httpx.Client, token: str, **headers: str) -> SimpleCookie:
    """Sign in through the form (its CSRF value and cookie sent back, as a browser does, Secure
    or not: behind a proxy the browser speaks HTTPS); the cookies the answer sets."""
    form = client.get("/ui/signin", headers=headers)
    assert form.status_code == 200, form.text
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    client.cookies.clear()
    answer = client.post(
        "/ui/signin",
        data={"token": token, "then": "/ui/jobs", "csrf": csrf.group(1)},
        headers={**headers, "Cookie": f"orch_csrf={csrf.group(1)}"},
    )
    assert answer.status_code == 303, answer.text
    cookies = SimpleCookie()
    for header in answer.headers.get_list("set-cookie"):
        cookies.load(header)
    return cookies


def test_over_https_the_cookie_is_secure_httponly_and_strict(
    serve: Callable[..., Settings], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    settings = serve(tls_cert=cert, tls_key=key)
    with httpx.Client(
        base_url=f"https://127.0.0.1:{settings.port}",
        verify=ssl.create_default_context(cafile=cert),
    ) as client:
        cookie = session_cookie(client, admin_token(settings))["orch_session"]
        assert cookie["secure"] and cookie["httponly"] and cookie["samesite"].lower() == "strict"
        # The session works over HTTPS (the client sends a Secure cookie back there).
        client.cookies.set("orch_session", cookie.value, domain="127.0.0.1", path="/ui")
        jobs = client.get("/ui/jobs")
        assert jobs.status_code == 200 and "Sign out" in jobs.text
    with (
        httpx.Client(base_url=f"http://127.0.0.1:{settings.port}") as plain,
        pytest.raises(httpx.HTTPError),
    ):
        plain.get("/ui/signin")  # a TLS server speaks no plain HTTP


def test_over_plain_http_the_cookie_is_not_secure_whatever_a_client_claims(
    serve: Callable[..., Settings],
) -> None:
    settings = serve()
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}") as client:
        for headers in ({}, {"X-Forwarded-Proto": "https"}):
            cookie = session_cookie(client, admin_token(settings), **headers)["orch_session"]
            assert not cookie["secure"]
            assert cookie["httponly"] and cookie["samesite"].lower() == "strict"


def test_behind_a_trusted_proxy_its_https_makes_the_cookie_secure(
    serve: Callable[..., Settings],
) -> None:
    settings = serve(forwarded_allow_ips="127.0.0.1")
    with httpx.Client(base_url=f"http://127.0.0.1:{settings.port}") as client:
        forwarded = session_cookie(client, admin_token(settings), **{"X-Forwarded-Proto": "https"})
        assert forwarded["orch_session"]["secure"] and forwarded["orch_csrf"]["secure"]
        assert not session_cookie(client, admin_token(settings))["orch_session"]["secure"]


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"tls_cert": Path("/tmp/cert.pem")}, "ORCH_TLS_KEY"),
        ({"forwarded_allow_ips": "10.0.0.0/8,proxy.example"}, "proxy.example"),
    ],
)
def test_a_tls_setting_without_its_pair_or_a_bad_proxy_is_refused(
    tmp_path: Path, overrides: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        Settings(data_dir=tmp_path, **overrides)
