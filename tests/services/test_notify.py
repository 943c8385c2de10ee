"""Wake-ups across processes over PostgreSQL LISTEN/NOTIFY: relays between hubs, their
reconnection, and two live servers (API only, and runner) sharing one database."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest

from orchestrator.storage.db import outage_of
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.relay import PAYLOAD_LIMIT_BYTES, Relay, decode, encode
from orchestrator.wakeups.topics import CANCEL, WORK, job_topic
from tests.conftest import (
    POSTGRES_URL,
    LiveServer,
    drop_database,
    postgres_admin,
    unavailable,
    wait_for,
)

pytestmark = pytest.mark.postgres

# Each relayed wake-up must land well within this (seconds); LISTEN/NOTIFY takes milliseconds.
WAKE_SECONDS = 1.0
# The runner's poll in the end-to-end tests: far longer than any assertion waits.
SLOW_POLL_SECONDS = 30.0


@pytest.fixture
def database_url() -> Iterator[str]:
    """A fresh PostgreSQL database: overrides conftest's, as only PostgreSQL relays wake-ups."""
    try:
        admin = postgres_admin()
    except psycopg.OperationalError:
        unavailable(f"PostgreSQL at {POSTGRES_URL}")
    name = f"orch_test_{uuid.uuid4().hex[:12]}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = POSTGRES_URL.rpartition("/")
    yield f"{base}/{name}"
    drop_database(name)


@pytest.fixture
def make_relay(database_url: str) -> Iterator[Callable[[], tuple[Hub, Relay]]]:
    """Start hubs with relays on the test database (stopped at the end)."""
    relays: list[Relay] = []

    def make() -> tuple[Hub, Relay]:
        hub = Hub()
        relay = Relay(hub, database_url, outage_of(database_url))
        relays.append(relay)
        return hub, relay

    yield make
    for relay in relays:
        relay.stop()


def paired(make_relay: Callable[[], tuple[Hub, Relay]]) -> tuple[Hub, Relay, Hub, Relay]:
    """Two started relays on one channel, as two processes would have."""
    hub_a, relay_a = make_relay()
    hub_b, relay_b = make_relay()
    relay_a.start()
    relay_b.start()
    return hub_a, relay_a, hub_b, relay_b


def waited_wake(hub: Hub, topic: str, publish: Callable[[], None]) -> float:
    """Seconds between ``publish()`` and ``hub``'s waiter on ``topic`` waking; fails past WAKE."""
    seen = {topic: hub.version(topic)}
    woke: list[float] = []
    waiter = threading.Thread(target=lambda: woke.append(hub.wait(seen, 10) and time.monotonic()))
    waiter.start()
    start = time.monotonic()
    publish()
    waiter.join(10)
    assert woke and woke[0], f"no wake-up on {topic}"
    latency = woke[0] - start
    assert latency < WAKE_SECONDS, f"wake-up took {latency:.3f} s"
    return latency


# --- payloads ------------------------------------------------------------------------------


def test_payloads_split_at_the_limit_and_round_trip() -> None:
    topics = [job_topic(uuid.uuid4().hex) for _ in range(600)]
    payloads = encode("origin", topics)
    assert len(payloads) > 1
    assert all(len(p.encode()) <= PAYLOAD_LIMIT_BYTES for p in payloads)
    decoded = [decode(p) for p in payloads]
    assert {origin for origin, _ in decoded} == {"origin"}
    assert [t for _, batch in decoded for t in batch] == topics
    assert encode("origin", [WORK, CANCEL]) == ['{"o":"origin","t":["work","cancel"]}']
    assert encode("origin", ["x" * PAYLOAD_LIMIT_BYTES, WORK]) == ['{"o":"origin","t":["work"]}']
    assert decode("not json") == ("", [])


# --- relays between hubs -------------------------------------------------------------------


def test_publish_wakes_a_waiter_in_the_other_hub_once(
    make_relay: Callable[[], tuple[Hub, Relay]],
) -> None:
    hub_a, _, hub_b, _ = paired(make_relay)
    latencies = [waited_wake(hub_b, WORK, lambda: hub_a.publish(WORK)) for _ in range(5)]
    latencies += [waited_wake(hub_a, CANCEL, lambda: hub_b.publish(CANCEL)) for _ in range(5)]
    print(f"relay wake-up latency: max {max(latencies) * 1000:.1f} ms")

    # A hub's own publish moves its version once: the echo of its NOTIFY is ignored. Once hub_b
    # has it, a NOTIFY hub_b sends reaches hub_a after the echo (one channel delivers in order).
    topic = job_topic("own")
    hub_a.publish(topic)
    assert hub_a.version(topic) == 1
    wait_for(lambda: hub_b.version(topic) == 1, timeout=WAKE_SECONDS)
    waited_wake(hub_a, WORK, lambda: hub_b.publish(WORK))
    assert hub_a.version(topic) == 1


def test_publish_local_is_not_sent(make_relay: Callable[[], tuple[Hub, Relay]]) -> None:
    hub_a, _, hub_b, _ = paired(make_relay)
    hub_a.publish_local("local-only")
    # Notifications on one channel arrive in order: once a later one lands, the first would have.
    waited_wake(hub_b, WORK, lambda: hub_a.publish(WORK))
    assert hub_a.version("local-only") == 1
    assert hub_b.version("local-only") == 0


def test_listener_survives_its_connection_being_terminated(
    make_relay: Callable[[], tuple[Hub, Relay]],
) -> None:
    hub_a, _, hub_b, relay_b = paired(make_relay)
    seen = {WORK: hub_b.version(WORK), CANCEL: hub_b.version(CANCEL)}
    with postgres_admin() as admin:
        terminated = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND query LIKE 'LISTEN%%'",
            (f"orchestrator-notify-{relay_b.origin[:8]}",),
        ).fetchall()
    assert terminated == [(True,)]
    # After reconnecting it wakes WORK and CANCEL itself: notifications may have been missed.
    wait_for(lambda: all(hub_b.version(t) > v for t, v in seen.items()), timeout=10)
    assert relay_b.wait_listening(10)
    waited_wake(hub_b, job_topic("after"), lambda: hub_a.publish(job_topic("after")))


def test_sender_survives_its_connection_being_terminated(
    make_relay: Callable[[], tuple[Hub, Relay]],
) -> None:
    hub_a, relay_a, hub_b, _ = paired(make_relay)
    waited_wake(hub_b, WORK, lambda: hub_a.publish(WORK))  # the sender's connection is open
    with postgres_admin() as admin:
        terminated = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND query NOT LIKE 'LISTEN%%'",
            (f"orchestrator-notify-{relay_a.origin[:8]}",),
        ).fetchall()
    assert terminated == [(True,)]
    topic = job_topic("resent")
    seen = {topic: hub_b.version(topic)}
    hub_a.publish(topic)
    assert hub_b.wait(seen, 10), "the publish after the sender lost its connection never arrived"


# --- two live servers on one database ------------------------------------------------------


def looping_job(server: LiveServer, name: str) -> dict[str, Any]:
    """Register a definition whose job prints a line, then loops until SIGTERM; submit one."""
    script = "trap 'exit 0' TERM; echo started-$ORCH_JOB_ID; while true; do sleep 0.1; done"
    server.register({"name": name, "image": "busybox:1.36", "command": ["sh", "-c", script]})
    return server.submit(definition=name)


@pytest.fixture
def api_and_runner(make_server: Callable[..., LiveServer]) -> tuple[LiveServer, LiveServer]:
    """An API-only server and a server with a runner whose poll is too slow to explain a wake-up."""
    runner = make_server(runner_name=f"r-{uuid.uuid4().hex[:8]}", poll_interval=SLOW_POLL_SECONDS)
    api = make_server(
        runner_name=f"api-{uuid.uuid4().hex[:8]}",
        runner_enabled=False,
        poll_interval=SLOW_POLL_SECONDS,
    )
    assert api.services.runner is None and api.services.relay is not None
    # Until its engine answers, a runner retries every engine_retry_interval: wait that out, so
    # only the 30 s poll remains besides a wake-up.
    assert runner.services.runner is not None
    wait_for(lambda: runner.services.runner.status().state == "active", timeout=10)
    return api, runner


def test_submit_and_cancel_through_an_api_server_reach_the_other_servers_runner(
    api_and_runner: tuple[LiveServer, LiveServer],
) -> None:
    api, runner = api_and_runner
    submitted = time.monotonic()
    job = looping_job(api, "loop")
    api.wait_job(job["id"], {"running"}, timeout=10)
    started = time.monotonic() - submitted
    assert api.job(job["id"])["runner"] == runner.settings.runner_name

    cancelled_at = time.monotonic()
    response = api.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert api.wait_job(job["id"], timeout=5)["status"] == "cancelled"
    cancelled = time.monotonic() - cancelled_at
    print(f"submit to running: {started:.2f} s; cancel to cancelled: {cancelled:.2f} s")


def test_followers_on_the_api_server_see_the_other_servers_logs_and_events(
    api_and_runner: tuple[LiveServer, LiveServer],
) -> None:
    api, runner = api_and_runner
    job = looping_job(api, "loop")
    path = f"/v1/projects/default/jobs/{job['id']}"
    # A follower re-reads on its own only after the poll (30 s) or the SSE keepalive (15 s):
    # within the 10 s read timeout, only a wake-up relayed from the runner's server moves it.
    with httpx.Client(base_url=api.url, headers=api.http.headers, timeout=10) as client:
        with client.stream("GET", f"{path}/logs", params={"follow": "true"}) as logs:
            line = next(logs.iter_lines())
        assert line == f"started-{job['id']}"
        with client.stream("GET", f"{path}/stream") as events:
            lines = events.iter_lines()
            assert any("event: started" in line for line in lines)
            cancelled_at = time.monotonic()
            assert runner.http.post(f"{path}/cancel").status_code == 200
            assert any("event: cancelled" in line for line in lines)
            seen_after = time.monotonic() - cancelled_at
    assert seen_after < 5, f"the cancelled event took {seen_after:.2f} s to reach the stream"


def test_a_revoke_on_one_server_ends_the_token_s_streams_on_the_other(
    api_and_runner: tuple[LiveServer, LiveServer],
) -> None:
    api, runner = api_and_runner
    job = looping_job(api, "loop")
    created = api.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    assert created.status_code == 201, created.text
    token = created.json()
    path = f"/v1/projects/default/jobs/{job['id']}/stream"
    headers = {"Authorization": f"Bearer {token['token']}"}
    # The API server also re-checks its streams' tokens every 2 s on its own, so the stream
    # ends either way; the time printed shows the relayed wake-up (milliseconds, not seconds).
    with (
        httpx.Client(base_url=api.url, headers=headers, timeout=10) as client,
        client.stream("GET", path) as events,
    ):
        lines = events.iter_lines()
        assert any("event: started" in line for line in lines)
        revoked_at = time.monotonic()
        assert runner.http.delete(f"/v1/tokens/{token['id']}").status_code == 200
        rest = list(lines)
        ended_after = time.monotonic() - revoked_at
    assert rest[-2].startswith(": the token was revoked")
    guard = api.services.streams.guard
    wait_for(lambda: guard.held(token["id"]) == 0)
    print(f"revoke to stream end on the other server: {ended_after:.2f} s")
