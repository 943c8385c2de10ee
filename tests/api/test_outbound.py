"""Outbound requests are guarded, on a live server (SQLite and PostgreSQL): URLs to local,
private and metadata addresses are refused when given (jobs' webhooks, schedules' HTTP targets
and job webhooks, Salad's and Quedup's), unless ``ORCH_OUTBOUND_ALLOW_NETWORKS`` allows them;
an address refused when the request is sent (the settings changed, or the name now resolves
elsewhere) is a recorded failure, not retried; the senders' transport resolves names itself;
images from a local registry are refused by the policy; an engine's long, many-line error
reaches a job's error as one short line."""

from __future__ import annotations

import json
import ssl
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from orchestrator.background.outbound import OutboundRefused, guarded_transport
from orchestrator.rules.outbound import OutboundRule, parse_networks

from ..conftest import TEST_IMAGE, LiveServer, admin_token, wait_for
from ..receiver import Receiver

JOBS = "/v1/projects/default/jobs"
SCHEDULES = "/v1/projects/default/schedules"
SETTING = "ORCH_OUTBOUND_ALLOW_NETWORKS"
# None of these may be reached by default; each spelling of 127.0.0.1 too.
REFUSED_URLS = [
    "http://127.0.0.1:8080/hook",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://[fd00:ec2::254]/",
    "http://10.1.2.3/hook",
    "http://192.168.0.1/",
    "http://100.64.0.1/",
    "http://0.0.0.0:8080/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:9/hook",
    "http://2130706433/hook",
    "http://0177.0.0.1/hook",
    "http://0x7f.1/hook",
]
# A public address no test ever sends to (its schedules never fire).
PUBLIC_URL = "http://93.184.215.14/hook"
NEVER = "0 0 1 1 *"


def sh(name: str, script: str, image: str = TEST_IMAGE) -> dict[str, Any]:
    return {"name": name, "image": image, "command": ["sh", "-c", script]}


def refused(response: httpx.Response, field: str) -> str:
    """The message of a 400 naming ``field`` for a refused address."""
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field, body
    assert f"refused unless {SETTING} allows it" in body["message"], body
    return str(body["message"])


@pytest.fixture
def strict(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server with the default: no private network allowed."""
    return make_server(outbound_allow_networks="", runner_enabled=False)


# --- at creation ---------------------------------------------------------------------------


def test_job_webhooks_to_local_addresses_are_refused(strict: LiveServer) -> None:
    strict.register(sh("ok", "true"))
    for url in REFUSED_URLS:
        response = strict.http.post(JOBS, json={"definition": "ok", "webhook": url})
        message = refused(response, "webhook")
        assert message.startswith("webhook: "), message
    # A name is refused for what it resolves to, without saying the address.
    named = strict.http.post(JOBS, json={"definition": "ok", "webhook": "http://localhost:9/"})
    message = refused(named, "webhook")
    assert "localhost resolves to a loopback address" in message
    assert "127.0.0.1" not in message and "::1" not in message
    assert "169.254.169.254 is a cloud metadata address" in refused(
        strict.http.post(JOBS, json={"definition": "ok", "webhook": REFUSED_URLS[2]}), "webhook"
    )
    # Nothing was stored.
    assert strict.http.get(JOBS).json()["items"] == []
    # A public address, and a name that does not resolve (checked when sent), are accepted.
    for url in (PUBLIC_URL, "http://no-such-host.invalid/hook"):
        assert strict.http.post(JOBS, json={"definition": "ok", "webhook": url}).status_code == 201


def test_schedule_targets_to_local_addresses_are_refused(strict: LiveServer) -> None:
    strict.register(sh("ok", "true"))
    for url in REFUSED_URLS:
        http = {"name": "probe", "cron": NEVER, "target": {"http": {"url": url}}}
        refused(strict.http.post(SCHEDULES, json=http), "target.http.url")
        job = {"definition": "ok", "webhook": url}
        hooked = {"name": "probe", "cron": NEVER, "target": {"job": job}}
        refused(strict.http.post(SCHEDULES, json=hooked), "target.job.webhook")
    assert strict.http.get(SCHEDULES).json()["items"] == []
    made = {"name": "probe", "cron": NEVER, "target": {"http": {"url": PUBLIC_URL}}}
    assert strict.http.post(SCHEDULES, json=made).status_code == 201, made
    moved = {"target": {"http": {"url": "http://127.0.0.1:8080/"}}}
    refused(strict.http.patch(f"{SCHEDULES}/probe", json=moved), "target.http.url")
    kept = strict.http.get(f"{SCHEDULES}/probe").json()
    assert kept["target"]["http"]["url"] == PUBLIC_URL


def test_the_drop_in_apis_refuse_local_addresses(strict: LiveServer) -> None:
    # Salad: a job's webhook, refused in Salad's problem shape.
    headers = {"Salad-Api-Key": admin_token(strict.settings)}
    salad = f"{strict.url}/api/public/organizations/acme/projects/default/queues"
    assert strict.anonymous.post(salad, json={"name": "hooks"}, headers=headers).status_code == 201
    for url in ("http://127.0.0.1:8080/done", "http://169.254.169.254/"):
        body = {"input": {"n": 1}, "webhook": url}
        response = strict.anonymous.post(f"{salad}/hooks/jobs", json=body, headers=headers)
        assert response.status_code == 400, response.text
        assert response.json()["detail"].startswith("webhook: "), response.text
        assert SETTING in response.json()["detail"]
    # Quedup: the job's URL, when created and when changed.
    quedup = {"method": "GET", "name": "probe", "url": "http://[::1]/", "schedule": NEVER}
    response = strict.http.post("/jobs", json=quedup)
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith("url: ::1 is a loopback address"), response.text
    made = strict.http.post("/jobs", json={**quedup, "url": PUBLIC_URL})
    assert made.status_code == 200, made.text
    moved = strict.http.patch(f"/jobs/{made.json()['id']}", json={"url": "http://10.0.0.7/"})
    assert moved.status_code == 400, moved.text
    assert moved.json()["error"].startswith("url: 10.0.0.7 is a private address"), moved.text


def test_allowed_networks_let_their_addresses_through(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(outbound_allow_networks="127.0.0.0/8, 10.0.0.0/8", runner_enabled=False)
    server.register(sh("ok", "true"))
    for url in ("http://127.0.0.1:8080/hook", "http://10.1.2.3/hook", "http://2130706433/"):
        response = server.http.post(JOBS, json={"definition": "ok", "webhook": url})
        assert response.status_code == 201, response.text
    for url in ("http://169.254.169.254/", "http://192.168.0.1/", "http://[::1]/"):
        response = server.http.post(JOBS, json={"definition": "ok", "webhook": url})
        refused(response, "webhook")


# --- when sent -----------------------------------------------------------------------------


def test_a_webhook_refused_when_sent_is_a_failed_delivery_not_retried(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    # Accepted while loopback was allowed; sent by a server that no longer allows it (as a
    # name that resolves elsewhere by then would be).
    first = make_server(runner_enabled=False)
    first.register(sh("ok", "true"))
    created = first.http.post("/v1/projects/default/queues", json={"name": "parked"})
    assert created.status_code == 201, created.text
    job = first.submit(definition="ok", queue="parked", webhook=f"{receiver.url}/hook")
    first.stop()
    second = make_server(outbound_allow_networks="", runner_enabled=False, webhook_retry_base=0.1)
    assert second.http.post(f"{JOBS}/{job['id']}/cancel").status_code == 200

    def failed() -> dict[str, Any] | None:
        items = second.http.get(f"{JOBS}/{job['id']}/deliveries").json()["items"]
        return items[0] if items and items[0]["status"] == "failed" else None

    delivery = wait_for(failed)
    expected = f"not sent: 127.0.0.1 is a loopback address, refused unless {SETTING} allows it"
    assert delivery["attempts"] == 1
    assert delivery["last_status_code"] is None
    assert delivery["last_error"] == expected
    (event,) = [e for e in second.events(job["id"]) if e["type"].startswith("webhook_")]
    assert event["type"] == "webhook_failed"
    assert event["detail"]["last_error"] == expected
    assert receiver.received == []


def test_an_http_target_refused_when_sent_fails_its_run_at_once(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    first = make_server(runner_enabled=False)
    body = {"name": "probe", "cron": NEVER, "target": {"http": {"url": f"{receiver.url}/x"}}}
    assert first.http.post(SCHEDULES, json=body).status_code == 201
    first.stop()
    second = make_server(outbound_allow_networks="", runner_enabled=False)
    assert second.http.post(f"{SCHEDULES}/probe/trigger").status_code == 202

    def finished() -> dict[str, Any] | None:
        items = second.http.get(f"{SCHEDULES}/probe/runs").json()["items"]
        return items[0] if items and items[0]["status"] in ("succeeded", "failed") else None

    run = wait_for(finished)
    expected = f"not sent: 127.0.0.1 is a loopback address, refused unless {SETTING} allows it"
    assert run["status"] == "failed"
    assert run["attempts"] == 1  # the default ladder has six retries: none was taken
    assert run["error"] == expected and run["status_code"] is None
    assert second.http.get(f"{SCHEDULES}/probe").json()["last_outcome"] == (
        f"failed after 1 attempt: {expected}"
    )
    assert receiver.received == []


def test_the_transport_checks_what_a_name_resolves_to_when_it_connects(
    receiver: Receiver,
) -> None:
    port = receiver.url.rsplit(":", 1)[1]
    limits = httpx.Limits(max_connections=2)
    with httpx.Client(transport=guarded_transport(OutboundRule(), limits)) as client:
        with pytest.raises(OutboundRefused, match=r"^localhost resolves to a loopback address"):
            client.get(f"http://localhost:{port}/a")
        with pytest.raises(OutboundRefused, match=r"^127\.0\.0\.1 is a loopback address"):
            client.get(f"http://127.0.0.1:{port}/b")
    assert receiver.received == []
    allowed = OutboundRule(parse_networks("127.0.0.0/8,::1"))
    with httpx.Client(transport=guarded_transport(allowed, limits)) as client:
        # Connected to the checked address; the request still names the host.
        answer = client.get(f"http://localhost:{port}/c")
    assert answer.status_code == 200
    (request,) = receiver.received
    assert request.path == "/c" and request.headers["host"] == f"localhost:{port}"


def _certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for the name ``localhost`` only (no address in it), and its
    key: PEM files in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def test_https_names_the_host_though_the_checked_address_is_connected_to(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert_file, key_file = _certificate(tmp_path)
    seen: list[tuple[str | None, str | None]] = []  # (SNI, Host header)
    server_names: list[str | None] = []
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    context.sni_callback = lambda _socket, name, _context: server_names.append(name)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((server_names[-1] if server_names else None, self.headers["Host"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    # The transport trusts the certificate as httpx does a deployment's own CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
    try:
        allowed = OutboundRule(parse_networks("127.0.0.0/8,::1"))
        transport = guarded_transport(allowed, httpx.Limits(max_connections=2))
        with httpx.Client(transport=transport) as client:
            answer = client.get(f"https://localhost:{port}/")
            # The certificate names localhost, not the address: checked against the URL's host.
            with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
                client.get(f"https://127.0.0.1:{port}/")
    finally:
        server.shutdown()
        server.server_close()
    assert answer.status_code == 204
    assert seen == [("localhost", f"localhost:{port}")]


# --- images and engine errors --------------------------------------------------------------


def test_images_from_a_local_registry_are_refused_by_the_policy(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    images = [
        "127.0.0.1:5000/x",
        "localhost:5000/x:1",
        "localhost/x",
        "[::1]:5000/x",
        "169.254.169.254/x",
        "2130706433:5000/x",
    ]
    for image in images:
        response = server.http.post("/v1/projects/default/definitions", json=sh("local", "", image))
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["field"] == "image"
        assert "ORCH_POLICY_ALLOW_LOCAL_REGISTRIES" in body["message"], body
    allowing = make_server(runner_enabled=False, policy_allow_local_registries=True)
    response = allowing.http.post(
        "/v1/projects/default/definitions", json=sh("local", "", images[0])
    )
    assert response.status_code == 201, response.text


class _Registry:
    """A registry on 127.0.0.1 that knows no manifest, saying so at length, on many lines."""

    FIRST_LINE = "first line of the registry's answer " + "y" * 400
    MESSAGE = FIRST_LINE + "\nsecond line\x1b[31m red\n" + "z" * 3000

    def __init__(self) -> None:
        message = self.MESSAGE

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if self.path == "/v2/":
                    status, body = 200, b"{}"
                else:
                    status = 404
                    errors = [{"code": "MANIFEST_UNKNOWN", "message": message}]
                    body = json.dumps({"errors": errors}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = _answer

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def registry() -> Iterator[_Registry]:
    made = _Registry()
    yield made
    made.stop()


def test_an_engine_error_reaches_the_job_as_one_short_line(
    make_server: Callable[..., LiveServer], registry: _Registry
) -> None:
    server = make_server(policy_allow_local_registries=True)
    image = f"127.0.0.1:{registry.port}/orch-test-{uuid.uuid4().hex[:8]}:1"
    server.register(sh("pulled", "true", image))
    job = server.wait_job(server.submit(definition="pulled")["id"])
    assert job["status"] == "failed"
    error = job["error"]
    assert "first line of the registry's answer yyy" in error, error
    assert "\n" not in error and "\x1b" not in error and "second line" not in error
    assert error.endswith("…)"), error
    # The engine's words are cut to 200 characters inside the runner's own sentence.
    assert len(error) < 200 + len(f"image '{image}' is not on the Docker engine") + 80, error
