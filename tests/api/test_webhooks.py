"""Job webhooks: signed (Standard Webhooks), stored before sending, retried, recorded, listed
and redelivered; received by a real HTTP server on localhost and verified with the
``standardwebhooks`` and ``svix`` libraries that receivers use."""

from __future__ import annotations

import base64
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import standardwebhooks.webhooks
import svix.webhooks
from sqlmodel import select

from orchestrator import telemetry
from orchestrator.background import webhook_sender
from orchestrator.rules import masking
from orchestrator.rules.masking import public_url
from orchestrator.services import webhook_secrets, webhooks
from orchestrator.storage import key_rotation
from orchestrator.storage.models import Job, Project, Schedule, WebhookDelivery, utcnow
from orchestrator.storage.secret_box import SecretBox, generate_key

from ..conftest import TEST_IMAGE, LiveServer, bearer, free_port, wait_for

JOBS = "/v1/projects/default/jobs"
SECRET = "/v1/projects/default/webhook-secret"
# Fast retries for tests: 0.2 s, 0.4 s, then every second or so.
FAST_RETRIES = {"webhook_retry_base": 0.2, "webhook_retry_max": 1.0}


# --- a real receiver ------------------------------------------------------------------------


@dataclass
class Received:
    """One request the receiver got."""

    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def job_id(self) -> str:
        return str(json.loads(self.body)["id"])


@dataclass
class Behaviour:
    """How the receiver answers on one path."""

    status: int = 204
    close: bool = False  # drop the connection without an answer
    hold: threading.Event | None = None  # answer only once this is set
    location: str | None = None


@dataclass
class Receiver:
    """A threaded HTTP server on 127.0.0.1 that records every POST; it may be down (its port
    closed) and brought up later on the same port."""

    port: int = field(default_factory=free_port)
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                with receiver._lock:
                    receiver.requests.append(Received(self.path, dict(self.headers), body))
                behaviour = receiver.behaviours.get(self.path, Behaviour())
                if behaviour.hold is not None:
                    behaviour.hold.wait(60)
                if behaviour.close:
                    self.close_connection = True
                    return
                self.send_response(behaviour.status)
                if behaviour.location:
                    self.send_header("Location", behaviour.location)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def of(self, job_id: str) -> list[Received]:
        """The requests about one job, in arrival order."""
        with self._lock:
            return [r for r in self.requests if r.job_id == job_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A receiver that is up, answering 204 on every path unless told otherwise."""
    receiver = Receiver()
    receiver.start()
    yield receiver
    for behaviour in receiver.behaviours.values():
        if behaviour.hold is not None:
            behaviour.hold.set()
    receiver.stop()


# --- helpers ---------------------------------------------------------------------------------


def sh(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]}


def deliveries(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    response = server.http.get(f"{JOBS}/{job_id}/deliveries")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def wait_delivery(
    server: LiveServer, job_id: str, status: str, number: int = 1, timeout: float = 60.0
) -> dict[str, Any]:
    """Wait until delivery ``number`` of the job has ``status``; the delivery."""

    def reached() -> dict[str, Any] | None:
        for delivery in deliveries(server, job_id):
            if delivery["number"] == number and delivery["status"] == status:
                return delivery
        return None

    return dict(wait_for(reached, timeout))


def webhook_events(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    return [e for e in server.events(job_id) if e["type"].startswith("webhook_")]


def secret(server: LiveServer) -> str:
    response = server.http.get(SECRET)
    assert response.status_code == 200, response.text
    return str(response.json()["secret"])


def verify(request: Received, key: str) -> None:
    """Both receivers' libraries accept the request under ``key`` (or raise)."""
    standardwebhooks.webhooks.Webhook(key).verify(request.body, request.headers)
    svix.webhooks.Webhook(key).verify(request.body, request.headers)


def rejected(request: Received, key: str) -> bool:
    """Both receivers' libraries refuse the request under ``key`` (they must agree)."""
    try:
        standardwebhooks.webhooks.Webhook(key).verify(request.body, request.headers)
    except standardwebhooks.webhooks.WebhookVerificationError:
        with pytest.raises(svix.webhooks.WebhookVerificationError):
            svix.webhooks.Webhook(key).verify(request.body, request.headers)
        return True
    return False


def signatures(request: Received) -> list[str]:
    """The ``v1,`` signatures of the request's ``webhook-signature`` header."""
    sent = {k.lower(): v for k, v in request.headers.items()}["webhook-signature"]
    return sent.split(" ")


def end_grace(server: LiveServer, project: str = "default") -> None:
    """Move the project's last secret rotation back past the grace period, as if it had
    passed (instead of waiting for it)."""
    past = utcnow() - timedelta(seconds=server.settings.webhook_secret_grace + 3600)
    with server.services.db.transaction() as session:
        row = session.get(Project, project)
        assert row is not None and row.webhook_secret_rotate_time is not None
        row.webhook_secret_rotate_time = past
        session.add(row)


def stored_previous(server: LiveServer, project: str = "default") -> str | None:
    """The project's stored previous secret (ciphertext), if any."""
    with server.services.db.read() as session:
        row = session.get(Project, project)
        assert row is not None
        return row.previous_webhook_secret_ciphertext


def basic_credentials(request: Received) -> bytes:
    """The user and password the request's Basic ``Authorization`` header carries."""
    sent = {k.lower(): v for k, v in request.headers.items()}["authorization"]
    assert sent.startswith("Basic ")
    return base64.b64decode(sent.removeprefix("Basic "))


def stored_job(server: LiveServer, job_id: str) -> Job:
    with server.services.db.read() as session:
        (row,) = session.exec(select(Job).where(Job.id == job_id)).all()
        return row


def paused_job(server: LiveServer, **body: Any) -> dict[str, Any]:
    """A job submitted to the paused queue ``parked`` (it starts no container)."""
    if server.http.get("/v1/projects/default/queues/parked").status_code == 404:
        created = server.http.post(
            "/v1/projects/default/queues", json={"name": "parked", "paused": True}
        )
        assert created.status_code == 201, created.text
    return server.submit(definition="ok", queue="parked", **body)


# --- tests -----------------------------------------------------------------------------------


def attempts_counted(outcome: str) -> float:
    """The process's count of webhook sends with ``outcome`` (``/metrics``)."""
    name = "orchestrator_webhook_attempts_total"
    return telemetry.REGISTRY.get_sample_value(name, {"outcome": outcome}) or 0.0


def lags_counted() -> float:
    name = "orchestrator_webhook_delivery_lag_seconds_count"
    return telemetry.REGISTRY.get_sample_value(name) or 0.0


def test_finished_jobs_deliver_their_json_signed(server: LiveServer, receiver: Receiver) -> None:
    before = (attempts_counted("delivered"), lags_counted())
    server.register(sh("ok", 'echo hi; echo \'{"n": 1}\' > "$ORCH_OUTPUT"'))
    server.register(sh("fails", "exit 3"))
    ok = server.submit(definition="ok", webhook=receiver.url("/ok"))
    failed = server.submit(definition="fails", webhook=receiver.url("/failed"))
    cancelled = paused_job(server, webhook=receiver.url("/cancelled"))
    assert server.http.post(f"{JOBS}/{cancelled['id']}/cancel").status_code == 200
    key = secret(server)
    assert key.startswith("whsec_")

    expected = {ok["id"]: "succeeded", failed["id"]: "failed", cancelled["id"]: "cancelled"}
    reasons = {ok["id"]: None, failed["id"]: "exit_code", cancelled["id"]: "cancelled"}
    for job_id, status in expected.items():
        delivery = wait_delivery(server, job_id, "delivered")
        (request,) = receiver.of(job_id)
        verify(request, key)
        # The body is the job exactly as the API shows it.
        shown = server.http.get(f"{JOBS}/{job_id}")
        assert request.body == shown.content
        assert json.loads(request.body)["status"] == status
        assert json.loads(request.body)["reason"] == reasons[job_id]
        headers = {k.lower(): v for k, v in request.headers.items()}
        assert headers["content-type"] == "application/json"
        assert headers["user-agent"].startswith("orchestrator/")
        assert headers["webhook-id"] == delivery["message_id"]
        assert headers["webhook-id"].startswith("msg_")
        assert headers["webhook-signature"].startswith("v1,")
        assert delivery["event_type"] == f"job.{status}"
        assert delivery["url"] == shown.json()["webhook"]
        assert delivery["attempts"] == 1
        assert delivery["last_status_code"] == 204
        assert delivery["delivered_time"] is not None
        assert delivery["redelivery_of"] is None
        (attempt,) = delivery["attempt_log"]
        assert attempt["status_code"] == 204 and attempt["error"] is None
        (event,) = webhook_events(server, job_id)
        assert event["type"] == "webhook_delivered"
        assert event["detail"] == {"delivery": 1, "status_code": 204, "attempts": 1}
    assert json.loads(receiver.of(ok["id"])[0].body)["output"] == {"n": 1}
    # /metrics counts each delivery once, with its lag.
    assert (attempts_counted("delivered"), lags_counted()) == (before[0] + 3, before[1] + 3)
    # A job without a webhook has no delivery.
    plain = server.submit(definition="ok")
    server.wait_job(plain["id"])
    assert deliveries(server, plain["id"]) == []


def test_credentials_in_a_webhook_url_are_used_but_never_shown(
    server: LiveServer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="httpx")
    server.register(sh("ok", "true"))
    # A password with characters a URL must percent-encode ("@", ":", "/", "%").
    userinfo = "hook-user:pw-canary-51c2%40%3A%2F%25"
    url = f"http://{userinfo}@127.0.0.1:{receiver.port}/basic"
    job = server.submit(definition="ok", webhook=url)
    masked = f"http://***@127.0.0.1:{receiver.port}/basic"
    assert job["webhook"] == masked
    wait_delivery(server, job["id"], "delivered")
    again = server.http.post(f"{JOBS}/{job['id']}/deliveries/1/redeliver")
    assert again.status_code == 202, again.text
    wait_delivery(server, job["id"], "delivered", number=2)
    # The receiver gets the credentials as Basic authentication, decoded as any HTTP client
    # decodes a URL's: on the first delivery and on a redelivery.
    for request in receiver.of(job["id"]):
        assert basic_credentials(request) == b"hook-user:pw-canary-51c2@:/%"
    request = receiver.of(job["id"])[0]
    shown = [
        request.body.decode(),
        server.http.get(f"{JOBS}/{job['id']}").text,
        server.http.get(f"{JOBS}/{job['id']}/deliveries").text,
        server.http.get(f"{JOBS}/{job['id']}/events").text,
        server.http.get(JOBS).text,
    ]
    assert all("pw-canary-51c2" not in text for text in shown)
    assert json.loads(request.body)["webhook"] == masked
    # Stored: the URL with ***, the userinfo encrypted beside it; deliveries hold the URL only.
    row = stored_job(server, job["id"])
    assert row.webhook == masked
    assert "pw-canary-51c2" not in (row.webhook_auth_ciphertext or "")
    assert server.services.box.decrypt(row.webhook_auth_ciphertext or "") == {"userinfo": userinfo}
    with server.services.db.read() as session:
        urls = session.exec(
            select(WebhookDelivery.url).where(WebhookDelivery.job_id == job["id"])
        ).all()
    assert urls == [masked, masked]
    # The HTTP client logs each request's URL: it is sent to the URL without its userinfo.
    sent = [r.getMessage() for r in caplog.records if r.name == "httpx"]
    assert f"HTTP Request: POST http://127.0.0.1:{receiver.port}/basic" in "\n".join(sent)
    assert all("pw-canary-51c2" not in message for message in sent)


def test_a_schedules_job_target_keeps_its_webhook_credentials_encrypted(
    server: LiveServer, receiver: Receiver
) -> None:
    server.register(sh("ok", "true"))
    paused_job(server)  # makes the paused queue ``parked``
    url = f"http://sched-user:pw-canary-7d3e@127.0.0.1:{receiver.port}/scheduled"
    masked = f"http://***@127.0.0.1:{receiver.port}/scheduled"
    target = {"job": {"definition": "ok", "queue": "parked", "webhook": url}}
    base = "/v1/projects/default/schedules"
    made = server.http.post(base, json={"name": "hooked", "cron": "0 0 1 1 *", "target": target})
    assert made.status_code == 201, made.text
    assert made.json()["target"]["job"]["webhook"] == masked
    assert "pw-canary-7d3e" not in server.http.get(f"{base}/hooked").text
    with server.services.db.read() as session:
        (row,) = session.exec(select(Schedule).where(Schedule.name == "hooked")).all()
    assert row.target["webhook"] == masked
    decrypted = server.services.box.decrypt(row.webhook_auth_ciphertext or "")
    assert decrypted == {"userinfo": "sched-user:pw-canary-7d3e"}

    # A tick submits the job with the whole URL: its own row keeps the userinfo encrypted.
    run = server.http.post(f"{base}/hooked/trigger")
    assert run.status_code == 202, run.text
    job_id = run.json()["job_id"]
    assert server.job(job_id)["webhook"] == masked
    assert stored_job(server, job_id).webhook == masked
    assert server.http.post(f"{JOBS}/{job_id}/cancel").status_code == 200
    wait_delivery(server, job_id, "delivered")
    (request,) = receiver.of(job_id)
    assert basic_credentials(request) == b"sched-user:pw-canary-7d3e"

    # A new target without a webhook drops the credentials.
    changed = server.http.patch(
        f"{base}/hooked", json={"target": {"job": {"definition": "ok", "queue": "parked"}}}
    )
    assert changed.status_code == 200, changed.text
    with server.services.db.read() as session:
        (row,) = session.exec(select(Schedule).where(Schedule.name == "hooked")).all()
    assert row.webhook_auth_ciphertext is None and "webhook" not in row.target


def test_the_secret_endpoint_and_rotation(
    server: LiveServer, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server.register(sh("ok", "true"))
    first = secret(server)
    assert secret(server) == first
    assert server.http.get(SECRET).json()["previous_secret_until"] is None
    before = server.submit(definition="ok", webhook=receiver.url())
    wait_delivery(server, before["id"], "delivered")
    (old_request,) = receiver.of(before["id"])
    verify(old_request, first)
    assert len(signatures(old_request)) == 1

    rotated_at = utcnow()
    rotated = server.http.post(SECRET)
    assert rotated.status_code == 200, rotated.text
    second = rotated.json()["secret"]
    assert second.startswith("whsec_") and second != first
    assert secret(server) == second
    # The old secret is never shown again, only until when it signs: the grace (24 h).
    until = datetime.fromisoformat(rotated.json()["previous_secret_until"])
    assert rotated_at + timedelta(hours=24) <= until <= utcnow() + timedelta(hours=24)
    assert first not in rotated.text and first not in server.http.get(SECRET).text

    # During the grace: signed with both, so receivers on either secret accept it.
    after = server.submit(definition="ok", webhook=receiver.url())
    wait_delivery(server, after["id"], "delivered")
    (new_request,) = receiver.of(after["id"])
    assert len(signatures(new_request)) == 2
    verify(new_request, second)
    verify(new_request, first)
    assert rejected(new_request, "whsec_" + base64.b64encode(b"x" * 32).decode())

    # A redelivery of the message sent before the rotation is signed with today's secrets.
    again = server.http.post(f"{JOBS}/{before['id']}/deliveries/1/redeliver")
    assert again.status_code == 202, again.text
    wait_delivery(server, before["id"], "delivered", number=2)
    resent = receiver.of(before["id"])[1]
    verify(resent, second)
    verify(resent, first)
    assert resent.headers["webhook-id"] == old_request.headers["webhook-id"]
    assert resent.headers["webhook-signature"] != old_request.headers["webhook-signature"]

    # After the grace: the new secret alone; the old one fails and is no longer stored.
    assert stored_previous(server) is not None
    end_grace(server)
    assert server.http.get(SECRET).json()["previous_secret_until"] is None
    late = server.submit(definition="ok", webhook=receiver.url())
    wait_delivery(server, late["id"], "delivered")
    (late_request,) = receiver.of(late["id"])
    assert len(signatures(late_request)) == 1
    verify(late_request, second)
    assert rejected(late_request, first)
    assert stored_previous(server) is None
    # And a redelivery of the first message now carries the new secret's signature only.
    again = server.http.post(f"{JOBS}/{before['id']}/deliveries/1/redeliver")
    assert again.status_code == 202, again.text
    wait_delivery(server, before["id"], "delivered", number=3)
    resent = receiver.of(before["id"])[2]
    verify(resent, second)
    assert rejected(resent, first)

    audit = server.http.get("/v1/projects/default/audit")
    actions = [e["action"] for e in audit.json()["items"]]
    assert "webhook_secret_rotated" in actions and "webhook_secret_read" in actions
    assert first not in audit.text and second not in audit.text
    # Neither secret is ever logged, by our loggers or the libraries'.
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert logged
    assert not [key for key in (first, second) if key.removeprefix("whsec_") in logged]


def test_rotating_twice_within_the_grace_keeps_only_the_last_replaced_secret(
    server: LiveServer, receiver: Receiver
) -> None:
    server.register(sh("ok", "true"))
    first = secret(server)
    second = server.http.post(SECRET).json()["secret"]
    third = server.http.post(SECRET).json()["secret"]
    assert len({first, second, third}) == 3
    job = paused_job(server, webhook=receiver.url())
    assert server.http.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    wait_delivery(server, job["id"], "delivered")
    (request,) = receiver.of(job["id"])
    assert len(signatures(request)) == 2
    verify(request, third)
    verify(request, second)
    assert rejected(request, first)


def test_a_short_grace_setting_ends_the_old_secrets_signatures(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server(webhook_secret_grace=1.5)
    server.register(sh("ok", "true"))
    first = secret(server)
    rotated = server.http.post(SECRET).json()
    until = datetime.fromisoformat(rotated["previous_secret_until"])
    assert until <= utcnow() + timedelta(seconds=1.5)
    # Waited for, not slept: the grace is over once the server says no secret but the new one
    # signs.
    wait_for(lambda: server.http.get(SECRET).json()["previous_secret_until"] is None, 10)
    job = paused_job(server, webhook=receiver.url())
    assert server.http.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    wait_delivery(server, job["id"], "delivered")
    (request,) = receiver.of(job["id"])
    assert len(signatures(request)) == 1
    verify(request, rotated["secret"])
    assert rejected(request, first)


def test_redelivery(server: LiveServer, receiver: Receiver) -> None:
    server.register(sh("ok", "true"))
    job = server.submit(definition="ok", webhook=receiver.url())
    first = wait_delivery(server, job["id"], "delivered")
    response = server.http.post(f"{JOBS}/{job['id']}/deliveries/1/redeliver")
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["number"] == 2
    assert created["redelivery_of"] == 1
    assert created["message_id"] == first["message_id"]
    assert created["status"] in ("pending", "sending", "delivered")
    wait_delivery(server, job["id"], "delivered", number=2)
    original, resent = receiver.of(job["id"])
    assert resent.body == original.body
    assert resent.headers["webhook-id"] == original.headers["webhook-id"]
    verify(resent, secret(server))
    events = webhook_events(server, job["id"])
    assert [(e["type"], e["detail"]["delivery"]) for e in events] == [
        ("webhook_delivered", 1),
        ("webhook_delivered", 2),
    ]
    assert [d["number"] for d in deliveries(server, job["id"])] == [1, 2]


def test_a_receiver_down_for_a_while_gets_it_when_it_recovers(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(**FAST_RETRIES, webhook_retry_for=120)
    receiver = Receiver()  # not started: its port refuses connections
    server.register(sh("ok", "true"))
    job = server.submit(definition="ok", webhook=receiver.url())
    server.wait_job(job["id"])

    def failed_attempts() -> bool:
        found = deliveries(server, job["id"])
        return bool(found) and found[0]["attempts"] >= 3

    wait_for(failed_attempts, timeout=60)
    down = deliveries(server, job["id"])[0]
    assert down["status"] in ("pending", "sending")
    assert down["last_status_code"] is None
    assert "ConnectError" in down["last_error"]
    receiver.start()
    try:
        delivered = wait_delivery(server, job["id"], "delivered")
    finally:
        receiver.stop()
    log = delivered["attempt_log"]
    assert len(log) == delivered["attempts"] >= 4
    assert all(entry["status_code"] is None and entry["error"] for entry in log[:-1])
    assert log[-1]["status_code"] == 204 and log[-1]["error"] is None
    (request,) = receiver.of(job["id"])
    verify(request, secret(server))
    events = webhook_events(server, job["id"])
    assert [e["type"] for e in events] == ["webhook_delivered"]
    assert events[0]["detail"]["attempts"] == delivered["attempts"]


def test_a_receiver_that_always_fails_ends_failed(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server(**FAST_RETRIES, webhook_retry_for=2)
    receiver.behaviours["/500"] = Behaviour(status=500)
    receiver.behaviours["/close"] = Behaviour(close=True)
    receiver.behaviours["/redirect"] = Behaviour(status=302, location=receiver.url("/elsewhere"))
    server.register(sh("ok", "true"))
    before = {outcome: attempts_counted(outcome) for outcome in ("retry", "failed")}
    jobs = {
        path: server.submit(definition="ok", webhook=receiver.url(path))["id"]
        for path in ("/500", "/close", "/redirect")
    }
    sends = 0
    for path, job_id in jobs.items():
        failed = wait_delivery(server, job_id, "failed")
        sends += failed["attempts"]
        assert failed["attempts"] >= 2
        assert failed["attempts"] == len(failed["attempt_log"]) == len(receiver.of(job_id))
        assert failed["delivered_time"] is None
        assert failed["next_attempt_at"] is None
        (event,) = webhook_events(server, job_id)
        assert event["type"] == "webhook_failed"
        assert event["detail"] == {
            "delivery": 1,
            "attempts": failed["attempts"],
            "last_status_code": failed["last_status_code"],
            "last_error": failed["last_error"],
        }
        assert {r.path for r in receiver.of(job_id)} == {path}
    assert deliveries(server, jobs["/500"])[0]["last_status_code"] == 500
    assert "500" in deliveries(server, jobs["/500"])[0]["last_error"]
    closed = deliveries(server, jobs["/close"])[0]
    assert closed["last_status_code"] is None and "RemoteProtocolError" in closed["last_error"]
    redirected = deliveries(server, jobs["/redirect"])[0]
    assert redirected["last_status_code"] == 302
    assert "redirects are not followed" in redirected["last_error"]
    # The job's own outcome is untouched.
    assert all(server.job(job_id)["status"] == "succeeded" for job_id in jobs.values())
    # /metrics: every send but the last of each was a retry; each last one gave up.
    assert attempts_counted("failed") - before["failed"] == 3
    assert attempts_counted("retry") - before["retry"] == sends - 3


def test_a_slow_receiver_delays_neither_other_deliveries_nor_jobs(
    make_server: Callable[..., LiveServer], receiver: Receiver
) -> None:
    server = make_server(webhook_timeout=60)
    held = threading.Event()
    receiver.behaviours["/slow"] = Behaviour(hold=held)
    server.register(sh("ok", "true"))
    slow = server.submit(definition="ok", webhook=receiver.url("/slow"))
    wait_for(lambda: receiver.of(slow["id"]))  # its receiver now holds the request
    fast = server.submit(definition="ok", webhook=receiver.url("/fast"))
    plain = server.submit(definition="ok")
    wait_delivery(server, fast["id"], "delivered")
    assert server.wait_job(plain["id"])["status"] == "succeeded"
    assert deliveries(server, slow["id"])[0]["status"] == "sending"
    held.set()
    delivered = wait_delivery(server, slow["id"], "delivered")
    assert delivered["attempts"] == 1


@pytest.mark.parametrize("left", ["pending", "sending"])
def test_a_stored_delivery_survives_a_restart(
    make_server: Callable[..., LiveServer], left: str
) -> None:
    first = make_server(**FAST_RETRIES, webhook_retry_for=600)
    receiver = Receiver()  # down until the restart
    first.register(sh("ok", "true"))
    job = first.submit(definition="ok", webhook=receiver.url())
    first.wait_job(job["id"])
    wait_for(lambda: (deliveries(first, job["id"]) or [{}])[0].get("attempts", 0) >= 1)
    first.stop()
    if left == "sending":
        # As a process that died in the middle of a send leaves it: claimed, its lease over.
        with first.services.db.transaction() as session:
            (row,) = session.exec(
                select(WebhookDelivery).where(WebhookDelivery.job_id == job["id"])
            ).all()
            row.status = "sending"
            row.lease_until = utcnow() - timedelta(seconds=1)
            session.add(row)
        first.services.db.dispose()  # the connection this opened after the server closed
    receiver.start()
    try:
        second = make_server(**FAST_RETRIES, webhook_retry_for=600)
        delivered = wait_delivery(second, job["id"], "delivered")
    finally:
        receiver.stop()
    assert delivered["attempt_log"][-1]["status_code"] == 204
    (request,) = receiver.of(job["id"])
    verify(request, secret(second))
    assert [e["type"] for e in webhook_events(second, job["id"])] == ["webhook_delivered"]


def test_refusals(server: LiveServer, receiver: Receiver) -> None:
    server.register(sh("ok", "true"))
    with_hook = paused_job(server, webhook=receiver.url())
    without = paused_job(server)
    for job in (with_hook, without):
        assert server.http.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    wait_delivery(server, with_hook["id"], "delivered")
    redeliver = f"{JOBS}/{with_hook['id']}/deliveries"

    def expect(response: httpx.Response, status: int, field: str | None) -> None:
        assert response.status_code == status, response.text
        assert response.json()["field"] == field, response.text

    expect(server.http.get(f"{JOBS}/absent/deliveries"), 404, "job")
    expect(server.http.post(f"{redeliver}/7/redeliver"), 404, "number")
    expect(server.http.post(f"{redeliver}/0/redeliver"), 400, "number")
    expect(server.http.post(f"{JOBS}/{without['id']}/deliveries/1/redeliver"), 409, "webhook")
    expect(server.http.get("/v1/projects/nowhere/webhook-secret"), 404, "project")

    def token(role: str, project: str) -> str:
        body = {"name": role, "role": role, "project": project}
        created = server.http.post("/v1/tokens", json=body)
        assert created.status_code == 201, created.text
        return str(created.json()["token"])

    created = server.http.post("/v1/projects", json={"name": "other"})
    assert created.status_code == 201, created.text
    reader = bearer(token("read", "default"))
    outsider = bearer(token("write", "other"))
    writer = bearer(token("write", "default"))
    expect(server.http.get(SECRET, headers=reader), 403, "token")
    expect(server.http.post(SECRET, headers=reader), 403, "token")
    expect(server.http.post(f"{redeliver}/1/redeliver", headers=reader), 403, "token")
    assert server.http.get(redeliver, headers=reader).status_code == 200
    expect(server.http.get(SECRET, headers=outsider), 404, "project")
    expect(server.http.get(redeliver, headers=outsider), 404, "project")
    assert server.http.get(SECRET, headers=writer).json()["secret"] == secret(server)
    expect(server.http.get(SECRET, headers={"Authorization": ""}), 401, "authorization")
    # Nothing was redelivered by the refused requests.
    assert [d["number"] for d in deliveries(server, with_hook["id"])] == [1]


def test_key_rotation_keeps_the_webhook_secret(server: LiveServer, receiver: Receiver) -> None:
    key = secret(server)
    server.register(sh("ok", "true"))
    # Waits, with credentials in its webhook URL, until after the old key is gone.
    waiting = paused_job(server, webhook=f"http://u:pw-rotated@127.0.0.1:{receiver.port}/late")
    path = server.settings.data_dir / "secret-key"
    retired, tallies = key_rotation.rotate_key_file(server.services.db, path)
    assert retired == 1
    by_column = {tally.column: tally for tally in tallies}
    assert by_column["projects.webhook_secret_ciphertext"].retired == 1
    assert by_column["jobs.webhook_auth_ciphertext"].retired == 1
    # The old key is gone: the secret is still readable only if it was re-encrypted.
    assert key_rotation.prune_key_file(server.services.db, path) == 1
    assert secret(server) == key
    job = server.submit(definition="ok", webhook=receiver.url())
    wait_delivery(server, job["id"], "delivered")
    verify(receiver.of(job["id"])[0], key)
    assert server.http.post(f"{JOBS}/{waiting['id']}/cancel").status_code == 200
    wait_delivery(server, waiting["id"], "delivered")
    assert basic_credentials(receiver.of(waiting["id"])[0]) == b"u:pw-rotated"


# --- pure parts ------------------------------------------------------------------------------


def test_sign_matches_the_standard_library() -> None:
    key = "whsec_" + base64.b64encode(b"k" * 32).decode()
    ours = webhook_secrets.sign(key, "msg_1", 1_700_000_000, '{"a":"é"}')
    theirs = standardwebhooks.webhooks.Webhook(key).sign(
        "msg_1", datetime.fromtimestamp(1_700_000_000, UTC), '{"a":"é"}'
    )
    assert ours == theirs


def test_backoff_doubles_up_to_the_maximum_with_jitter() -> None:
    assert [webhook_sender.backoff(n, 1.0, 10.0, lambda: 1.0) for n in (1, 2, 3, 4, 5)] == [
        1.0, 2.0, 4.0, 8.0, 10.0,
    ]  # fmt: skip
    assert webhook_sender.backoff(3, 1.0, 10.0, lambda: 0.0) == 2.0


def test_urls_and_errors_never_show_userinfo() -> None:
    url = "https://user:hunter2-pw@hooks.example.com/in?x=1"
    assert public_url(url) == "https://***@hooks.example.com/in?x=1"
    assert public_url("http://127.0.0.1:9/hook") == "http://127.0.0.1:9/hook"
    error = webhook_sender.describe_error(httpx.ConnectError(f"cannot reach {url}"), url)
    assert "hunter2-pw" not in error and "user:" not in error
    assert error.startswith("ConnectError: ")
    # Sent to the URL without its userinfo, which is given apart.
    bare = "https://hooks.example.com/in"
    error = webhook_sender.describe_error(
        httpx.ConnectError("rejected user:hunter2%40pw, hunter2@pw"), bare, "user:hunter2%40pw"
    )
    assert "hunter2" not in error


def test_webhook_url_userinfo_is_sealed_apart() -> None:
    box = SecretBox([generate_key()])
    url = "https://user:p%40ss%3A@hooks.example.com:8443/in?x=1&y=@#top"
    shown, ciphertext = webhooks.seal_url(box, url)
    assert shown == "https://***@hooks.example.com:8443/in?x=1&y=@#top"
    assert ciphertext is not None and "p%40ss" not in ciphertext
    assert webhooks.open_userinfo(box, ciphertext) == "user:p%40ss%3A"
    assert webhooks.unseal_url(box, shown, ciphertext) == url
    assert masking.with_userinfo(shown, None) == "https://hooks.example.com:8443/in?x=1&y=@#top"
    plain = "http://127.0.0.1:9/hook?at=a@b"
    assert webhooks.seal_url(box, plain) == (plain, None)
    assert webhooks.unseal_url(box, plain, None) == plain
    assert webhooks.seal_url(box, None) == (None, None)
    # As HTTP clients read a URL's userinfo: percent-decoded; a user alone, an empty password.
    assert webhook_sender.basic_auth("user:p%40ss%3A") == ("user", "p@ss:")
    assert webhook_sender.basic_auth("token") == ("token", "")
    assert webhook_sender.basic_auth(None) is None
