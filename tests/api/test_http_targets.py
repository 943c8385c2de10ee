"""The executor of schedules' HTTP targets against a real HTTP receiver on localhost, on SQLite
and PostgreSQL: what an attempt records, the retry ladder, timeouts and refused connections,
secret headers kept out of storage, expired leases, replaced runs, a slow target beside a fast
one, and two executors sharing one database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator import telemetry
from orchestrator.background.http_targets import HttpTargetRunner, retry_delay
from orchestrator.config import Settings
from orchestrator.rules.retry import DEFAULT_RETRY_DELAYS
from orchestrator.services import projects
from orchestrator.storage.db import Database
from orchestrator.storage.models import Schedule, ScheduleRun, utcnow
from orchestrator.storage.secret_box import SecretBox, generate_key
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import HTTP_RUNS, schedule_topic
from tests.conftest import free_port, wait_for

FINISHED = {"succeeded", "failed"}


# --- a receiver ----------------------------------------------------------------------------


@dataclass
class Reply:
    """How the receiver answers one request."""

    status: int = 200
    body: bytes = b"ok"
    delay: float = 0.0
    echo_headers: bool = False


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A threaded HTTP server: per path, a list of replies (the last one repeats)."""

    url: str = ""
    plans: dict[str, list[Reply]] = field(default_factory=dict)
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def plan(self, path: str, *replies: Reply) -> str:
        """Answer ``path`` with ``replies`` in turn; the URL of the path."""
        self.plans[path] = list(replies)
        return self.url + path

    def seen(self, path: str) -> list[Received]:
        with self.lock:
            return [r for r in self.requests if r.path == path]

    def next_reply(self, path: str) -> Reply:
        with self.lock:
            plan = self.plans.get(path) or [Reply(404, b"no plan")]
            return plan.pop(0) if len(plan) > 1 else plan[0]


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            with receiver.lock:
                receiver.requests.append(
                    Received(self.command, self.path, dict(self.headers.items()), body)
                )
            reply = receiver.next_reply(self.path)
            if reply.delay:
                time.sleep(reply.delay)
            content = reply.body
            if reply.echo_headers:
                content = "\n".join(f"{k}: {v}" for k, v in self.headers.items()).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            except OSError:  # the client gave up (a timeout test)
                pass

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    result = Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(result))
    server.daemon_threads = True
    result.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield result
    server.shutdown()
    server.server_close()
    thread.join(10)


# --- the executor's world ------------------------------------------------------------------


@dataclass
class World:
    settings: Settings
    db: Database
    hub: Hub
    box: SecretBox
    runners: list[HttpTargetRunner]

    def runner(self, db: Database | None = None, hub: Hub | None = None) -> HttpTargetRunner:
        """A started executor (stopped at the end of the test)."""
        runner = HttpTargetRunner(self.settings, db or self.db, hub or self.hub, self.box)
        self.runners.append(runner)
        runner.start()
        return runner

    def add(
        self,
        url: str,
        *,
        retry_delays: list[float] | None = None,
        cron: str | None = None,
        headers: dict[str, str] | None = None,
        secret_headers: dict[str, str] | None = None,
        body: str | None = None,
        timeout: float | None = None,
        status: str = "pending",
        attempts: int = 0,
        lease_until: Any = None,
        publish: bool = True,
    ) -> tuple[str, int]:
        """A schedule with an HTTP target and one run of it, as the scheduler fires it."""
        now = utcnow()
        schedule = Schedule(
            id=str(uuid.uuid4()),
            project="default",
            name=f"s-{uuid.uuid4().hex[:8]}",
            cron=cron,
            run_at=None if cron else now,
            target_kind="http",
            target={
                "method": "POST",
                "url": url,
                "headers": headers or {},
                "secret_headers": sorted(secret_headers or {}),
                "body": body,
                "timeout": timeout,
            },
            secret_ciphertext=self.box.encrypt(secret_headers) if secret_headers else None,
            retry_delays=retry_delays or [],
            next_run_at=now + timedelta(hours=1) if cron else None,
            last_run_at=now,
        )
        run = ScheduleRun(
            schedule_id=schedule.id,
            tick=now,
            trigger="cron" if cron else "run_at",
            fire_time=now,
            status=status,
            attempts=attempts,
            next_attempt_at=now,
            lease_until=lease_until,
        )
        with self.db.transaction() as session:
            session.add(schedule)
            session.add(run)
            session.flush()
            assert run.id is not None
            run_id = run.id
        if publish:
            self.hub.publish(HTTP_RUNS)
        return schedule.id, run_id

    def run(self, run_id: int) -> ScheduleRun:
        with self.db.read() as session:
            run = session.get(ScheduleRun, run_id)
            assert run is not None
            return run

    def schedule(self, schedule_id: str) -> Schedule:
        with self.db.read() as session:
            schedule = session.get(Schedule, schedule_id)
            assert schedule is not None
            return schedule

    def wait_run(self, run_id: int) -> ScheduleRun:
        """The run once it has finished (succeeded or failed)."""

        def finished() -> ScheduleRun | None:
            run = self.run(run_id)
            return run if run.status in FINISHED else None

        result: ScheduleRun = wait_for(finished, 30)
        return result


@pytest.fixture
def world(tmp_path: Path, database_url: str) -> Iterator[World]:
    settings = Settings(
        data_dir=tmp_path / "data", database_url=database_url, poll_interval=1.0, http_timeout=10
    )
    db = Database(database_url)
    db.upgrade_schema()
    with db.transaction() as session:
        projects.ensure_default(session)
    result = World(settings, db, Hub(), SecretBox([generate_key()]), [])
    yield result
    for runner in result.runners:
        runner.stop()
    db.dispose()


# --- tests ---------------------------------------------------------------------------------


def test_retry_delay_follows_the_ladder() -> None:
    assert [retry_delay(n, DEFAULT_RETRY_DELAYS) for n in range(1, 8)] == [
        0.0,
        300.0,
        900.0,
        3600.0,
        10800.0,
        21600.0,
        None,
    ]
    assert retry_delay(1, []) is None
    assert schedule_topic("abc") == "schedule:abc"


def test_success_records_status_duration_and_first_kib(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/ok", Reply(200, b"x" * 5120))
    schedule_id, run_id = world.add(url, headers={"X-Plain": "p"}, body='{"hello": 1}')
    world.runner()
    run = world.wait_run(run_id)
    assert run.status == "succeeded", run.error
    assert (run.attempts, run.status_code, run.error) == (1, 200, None)
    assert run.duration_ms is not None and run.duration_ms > 0
    assert run.response_body == "x" * 1024
    assert run.finish_time is not None and run.lease_until is None
    assert [entry["status_code"] for entry in run.attempt_log] == [200]
    (request,) = receiver.seen("/ok")
    assert (request.method, request.body) == ("POST", b'{"hello": 1}')
    assert request.headers["X-Plain"] == "p"
    schedule = world.schedule(schedule_id)
    assert schedule.last_outcome is not None
    assert schedule.last_outcome.startswith("succeeded: HTTP 200 in ")
    assert schedule.last_outcome.endswith(" ms (attempt 1)")
    assert (schedule.status, schedule.next_run_at) == ("completed", None)


def test_a_redirect_is_not_followed(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/moved", Reply(302, b""))
    schedule_id, run_id = world.add(url, cron="*/5 * * * *")
    world.runner()
    run = world.wait_run(run_id)
    assert (run.status, run.status_code) == ("failed", 302)
    schedule = world.schedule(schedule_id)
    assert schedule.last_outcome == "failed after 1 attempt: HTTP 302"
    assert schedule.status == "active"  # a cron schedule goes on


def sent(outcome: str) -> float:
    """The process's count of HTTP-target requests with ``outcome`` (``/metrics``)."""
    value = telemetry.REGISTRY.get_sample_value(
        "orchestrator_schedule_http_requests_total", {"outcome": outcome}
    )
    return value or 0.0


def lags() -> float:
    value = telemetry.REGISTRY.get_sample_value("orchestrator_schedule_http_lag_seconds_count")
    return value or 0.0


def test_503_twice_then_200_succeeds_on_attempt_3(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/flaky", Reply(503), Reply(503), Reply(200))
    schedule_id, run_id = world.add(url, retry_delays=[0.2, 0.2], cron="0 * * * *")
    before = (sent("ok"), sent("failed"), lags())
    world.runner()
    run = world.wait_run(run_id)
    # /metrics counts each attempt once it is recorded, and the success's lag.
    assert (sent("ok"), sent("failed"), lags()) == (before[0] + 1, before[1] + 2, before[2] + 1)
    assert (run.status, run.attempts, run.status_code) == ("succeeded", 3, 200)
    assert [e["attempt"] for e in run.attempt_log] == [1, 2, 3]
    assert [e["status_code"] for e in run.attempt_log] == [503, 503, 200]
    assert len(receiver.seen("/flaky")) == 3
    outcome = world.schedule(schedule_id).last_outcome
    assert outcome is not None and outcome.endswith("(attempt 3)"), outcome


def test_always_500_fails_after_every_attempt(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/broken", Reply(500, b"boom"))
    schedule_id, run_id = world.add(url, retry_delays=[0.1, 0.1])
    world.runner()
    run = world.wait_run(run_id)
    assert (run.status, run.attempts, run.status_code) == ("failed", 3, 500)
    assert run.response_body == "boom" and run.finish_time is not None
    assert len(run.attempt_log) == 3 and len(receiver.seen("/broken")) == 3
    schedule = world.schedule(schedule_id)
    assert schedule.last_outcome == "failed after 3 attempts: HTTP 500"
    assert schedule.status == "failed"


def test_timeout_is_recorded(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/slow", Reply(200, delay=3))
    schedule_id, run_id = world.add(url, timeout=0.5)
    world.runner()
    run = world.wait_run(run_id)
    assert (run.status, run.status_code) == ("failed", None)
    assert run.error == "timed out after 0.5 s"
    outcome = world.schedule(schedule_id).last_outcome
    assert outcome == "failed after 1 attempt: timed out after 0.5 s"


def test_connection_refused_is_recorded(world: World) -> None:
    schedule_id, run_id = world.add(f"http://127.0.0.1:{free_port()}/nobody", retry_delays=[0])
    world.runner()
    run = world.wait_run(run_id)
    assert (run.status, run.attempts, run.error) == ("failed", 2, "connection refused")
    assert [e["error"] for e in run.attempt_log] == ["connection refused"] * 2
    outcome = world.schedule(schedule_id).last_outcome
    assert outcome == "failed after 2 attempts: connection refused"


def test_secret_headers_are_sent_and_never_stored(world: World, receiver: Receiver) -> None:
    secret = "tok-" + uuid.uuid4().hex
    password = "pw-" + uuid.uuid4().hex
    url = receiver.plan("/echo", Reply(500, echo_headers=True), Reply(200, echo_headers=True))
    url = url.replace("http://", f"http://user:{password}@")
    schedule_id, run_id = world.add(
        url, retry_delays=[0], secret_headers={"X-Api-Key": secret}, headers={"X-Plain": "p"}
    )
    # A refused connection to a URL with userinfo: its error must not carry it either.
    refused = f"http://user:{password}@127.0.0.1:{free_port()}/"
    _, refused_id = world.add(refused, secret_headers={"Authorization": f"Bearer {secret}"})
    world.runner()
    run = world.wait_run(run_id)
    world.wait_run(refused_id)
    assert run.status == "succeeded"
    received = receiver.seen("/echo")
    assert [r.headers["X-Api-Key"] for r in received] == [secret, secret]
    assert run.response_body is not None and "X-Api-Key: ***" in run.response_body
    with world.db.read() as session:
        for table in ("schedules", "schedule_runs"):
            for row in session.execute(sa.text(f"SELECT * FROM {table}")).all():
                for value in row:
                    assert secret not in str(value), table
            # The URL is stored as given (the target); nothing this executor writes has it.
            for row in session.execute(sa.text("SELECT * FROM schedule_runs")).all():
                assert password not in str(tuple(row))
        assert password not in str(world.schedule(schedule_id).last_outcome)


def test_a_secret_cut_by_the_body_limit_is_masked(world: World, receiver: Receiver) -> None:
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    # The second copy straddles the bytes read; masking the first draws it towards the limit.
    body = b"a" * 10 + secret.encode() + b"b" * (1050 - 10 - len(secret)) + secret.encode()
    url = receiver.plan("/leaky", Reply(200, body + b"c" * 4000))
    _, run_id = world.add(url, secret_headers={"X-Api-Key": secret})
    world.runner()
    run = world.wait_run(run_id)
    assert run.response_body is not None and run.response_body.startswith("a" * 10 + "***b")
    assert secret[:4] not in run.response_body


def test_an_expired_lease_counts_as_an_interrupted_attempt(
    world: World, receiver: Receiver
) -> None:
    url = receiver.plan("/ok", Reply(200))
    past = utcnow() - timedelta(seconds=5)
    options: dict[str, Any] = {"status": "running", "attempts": 1, "lease_until": past}
    retried_schedule, retried = world.add(url, retry_delays=[0], **options)
    last_schedule, last = world.add(url, **options)
    world.runner()
    run = world.wait_run(retried)
    assert (run.status, run.attempts) == ("succeeded", 2)
    assert [(e["attempt"], e["error"]) for e in run.attempt_log] == [(1, "interrupted"), (2, None)]
    assert world.schedule(retried_schedule).status == "completed"
    failed = world.wait_run(last)
    assert (failed.status, failed.error) == ("failed", "interrupted")
    assert world.schedule(last_schedule).last_outcome == "failed after 1 attempt: interrupted"
    assert len(receiver.seen("/ok")) == 1


def test_a_replaced_run_is_left_alone(world: World, receiver: Receiver) -> None:
    url = receiver.plan("/any", Reply(500))
    past = utcnow() - timedelta(seconds=5)
    _, untouched = world.add(url, status="replaced", lease_until=past)
    runner = HttpTargetRunner(world.settings, world.db, world.hub, world.box)
    world.runners.append(runner)
    assert runner.run_due() == 0
    # Replaced while its request is in flight: the result is dropped and nothing is retried.
    slow = receiver.plan("/in-flight", Reply(500, delay=1))
    schedule_id, run_id = world.add(slow, retry_delays=[0, 0], cron="0 * * * *")
    assert runner.run_due() == 1
    wait_for(lambda: receiver.seen("/in-flight"))
    with world.db.transaction() as session:
        run = session.get(ScheduleRun, run_id)
        assert run is not None and run.status == "running"
        run.status, run.finish_time = "replaced", utcnow()
        session.add(run)
    runner.stop()  # waits for the request in flight
    for run_id_ in (untouched, run_id):
        run = world.run(run_id_)
        assert (run.status, run.status_code, run.attempt_log) == ("replaced", None, [])
    assert len(receiver.seen("/any")) == 0 and len(receiver.seen("/in-flight")) == 1
    assert world.schedule(schedule_id).last_outcome is None


def test_a_slow_target_does_not_hold_up_another(world: World, receiver: Receiver) -> None:
    slow_id = world.add(receiver.plan("/slow", Reply(200, delay=3)), publish=False)[1]
    fast_id = world.add(receiver.plan("/fast", Reply(200)))[1]
    world.runner()
    fast = world.wait_run(fast_id)
    slow = world.wait_run(slow_id)
    assert fast.status == slow.status == "succeeded"
    assert fast.finish_time is not None and slow.finish_time is not None
    assert fast.finish_time < slow.finish_time


def test_two_executors_send_each_attempt_once(
    world: World, receiver: Receiver, database_url: str
) -> None:
    count = 12
    url = receiver.plan("/once", Reply(200, delay=0.05))
    run_ids = [world.add(url, publish=False)[1] for _ in range(count)]
    other_db, other_hub = Database(database_url), Hub()
    try:
        world.runner()
        world.runner(other_db, other_hub)
        world.hub.publish(HTTP_RUNS)
        other_hub.publish(HTTP_RUNS)
        runs = [world.wait_run(run_id) for run_id in run_ids]
        assert {(run.status, run.attempts) for run in runs} == {("succeeded", 1)}
        assert len(receiver.seen("/once")) == count
    finally:
        for runner in world.runners:
            runner.stop()
        other_db.dispose()
