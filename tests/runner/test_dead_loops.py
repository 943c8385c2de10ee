"""A background loop whose thread dies (an error its pass handling cannot catch) is not silent:
``/healthz`` names it and says ``degraded``, the server goes on answering, and a runner whose
claim loop or heartbeat died stops and says so in the registry, leaving its jobs to others
instead of holding them while it claims nothing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from orchestrator.wakeups.loop import Loop
from tests.conftest import TEST_IMAGE, LiveServer, wait_for

EVERY_LOOP = {
    "runner",
    "heartbeat",
    "worker-reaper",
    "scheduler",
    "http-targets",
    "webhook-sender",
    "retention",
    "queue-sampler",
}


class ThreadKilled(BaseException):
    """What no pass handling catches (as a ``SystemExit`` raised deep in a library would)."""


def loop_named(server: LiveServer, name: str) -> Loop:
    return next(loop for loop in server.services.loops() if loop.name == name)


def kill(monkeypatch: pytest.MonkeyPatch, server: LiveServer, name: str) -> None:
    """Make the loop's next pass end its thread, then wake it."""

    def die() -> None:
        raise ThreadKilled(name)

    loop = loop_named(server, name)
    monkeypatch.setattr(loop, "run_once", die)
    for topic in loop.topics():
        server.services.hub.publish(topic)
    wait_for(lambda: server.http.get("/healthz").json()["loops"][name] == "died")


def health(server: LiveServer) -> dict[str, Any]:
    response = server.http.get("/healthz")
    # Degraded, not down: the database answers, so load balancers keep the server.
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_every_loop_runs_in_a_healthy_server_and_a_dead_one_is_reported(
    make_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = make_server()
    before = health(server)
    assert before["status"] == "ok"
    assert before["loops"] == dict.fromkeys(EVERY_LOOP, "running")
    kill(monkeypatch, server, "scheduler")
    after = health(server)
    assert after["status"] == "degraded"
    assert after["loops"] == {**dict.fromkeys(EVERY_LOOP, "running"), "scheduler": "died"}
    assert after["runner"] == "active"
    died = [r for r in caplog.records if getattr(r, "action", None) == "loop_died"]
    assert [(r.levelname, r.getMessage().split(" (")[0]) for r in died] == [
        ("CRITICAL", "the scheduler loop died")
    ]
    # The rest of the server works: a job still runs.
    server.register({"name": "hello", "image": TEST_IMAGE, "command": ["echo", "hi"]})
    job = server.submit(definition="hello")
    assert server.wait_job(job["id"])["status"] == "succeeded"


@pytest.mark.parametrize("name", ["runner", "heartbeat"])
def test_a_runner_whose_claim_loop_or_heartbeat_died_stops_and_says_so(
    make_server: Callable[..., LiveServer], monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    server = make_server(runner_name=f"dies-{name}", runner_lease=3)
    runner = server.services.runner
    assert runner is not None
    # A slow exit (its workers' containers taking time to go): until it is over, the runner
    # is stopping, not stopped.
    close_workers = runner.workers.close

    def slow_close() -> None:
        time.sleep(1.0)
        close_workers()

    monkeypatch.setattr(runner.workers, "close", slow_close)
    kill(monkeypatch, server, name)
    wait_for(lambda: health(server)["runner"] in {"stopping", "stopped"})
    assert health(server)["runner"] == "stopping"
    wait_for(lambda: health(server)["runner"] == "stopped")
    report = health(server)
    assert report["status"] == "degraded"
    assert report["loops"][name] == "died"
    # The other loops of the runner ended with it; the server's own go on.
    assert {report["loops"][other] for other in ("runner", "heartbeat") if other != name} == {
        "stopped"
    }
    assert report["loops"]["scheduler"] == "running"
    row = server.http.get(f"/v1/runners/dies-{name}")
    assert row.status_code == 200, row.text
    assert row.json()["state"] == "stopped"
    # Nothing claims any more: a job submitted now waits for another runner.
    server.register({"name": "later", "image": TEST_IMAGE, "command": ["true"]})
    job = server.submit(definition="later")
    assert server.job(job["id"])["status"] == "queued"
