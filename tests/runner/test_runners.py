"""The runner registry over the API: listing, drain requests, lost runners and their jobs taken
back by another runner, fencing of the lost runner's attempt, queue filters and unique names.

Runners here live in test servers in this process; tests/runner/test_hosts.py runs them as separate
processes on two Docker engines.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
from typer.testing import CliRunner

from orchestrator.cli import app
from tests.conftest import TEST_IMAGE, LiveServer, bearer, containers_of, wait_for


def sh(script: str, name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script], **extra}


def runner_view(server: LiveServer, name: str) -> dict[str, Any]:
    response = server.http.get(f"/v1/runners/{name}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_runners_are_listed_with_host_capacity_jobs_heartbeat_and_state(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_name="lister", runner_capacity=3)
    server.register(sh("sleep 30", name="sleeper"))
    job = server.submit(definition="sleeper")
    server.wait_job(job["id"], {"running"})
    response = server.http.get("/v1/runners")
    assert response.status_code == 200, response.text
    (listed,) = [r for r in response.json()["items"] if r["name"] == "lister"]
    assert listed["state"] == "active"
    assert listed["capacity"] == 3
    assert listed["running"] == 1
    assert listed["docker"] == "ok"
    assert listed["hostname"]
    assert listed["heartbeat_time"] >= listed["start_time"]
    assert listed["queues"] is None
    assert server.http.get("/v1/runners/nobody").status_code == 404
    unauthenticated = server.http.get("/v1/runners", headers={"Authorization": ""})
    assert unauthenticated.status_code == 401
    server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")


def test_drain_finishes_running_jobs_claims_nothing_new_then_stops(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_name="drainee", drain_timeout=60)
    server.register(sh("sleep 2; echo done", name="short"))
    first = server.submit(definition="short")
    server.wait_job(first["id"], {"running"})
    response = server.http.post("/v1/runners/drainee/drain")
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "draining"
    waiting = server.submit(definition="short")
    assert server.wait_job(first["id"])["status"] == "succeeded"
    wait_for(lambda: runner_view(server, "drainee")["state"] == "stopped")
    assert server.job(waiting["id"])["status"] == "queued"
    wait_for(lambda: server.http.get("/healthz").json()["runner"] == "stopped")
    again = server.http.post("/v1/runners/drainee/drain")
    assert again.status_code == 409
    assert "stopped" in again.json()["message"]


def test_only_an_admin_may_drain(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_name="guarded")
    created = server.http.post(
        "/v1/tokens", json={"name": "dev", "role": "write", "project": "default"}
    )
    assert created.status_code == 201, created.text
    member = bearer(created.json()["token"])
    refused = server.http.post("/v1/runners/guarded/drain", headers=member)
    assert refused.status_code == 403
    assert runner_view(server, "guarded")["state"] == "active"
    assert server.http.get("/v1/runners", headers=member).status_code == 200


def test_a_lost_runners_job_is_taken_back_without_using_up_attempts(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient
) -> None:
    lost = make_server(runner_name="gone", runner_lease=2)
    lost.register(sh('sleep 4; echo "attempt $ORCH_ATTEMPT"', name="once"))
    job = lost.submit(definition="once")
    held = lost.wait_job(job["id"], {"running"})
    assert len(containers_of(docker_client, job["id"])) == 1
    # Stopping the server leaves the container running and the job held; nobody beats for it.
    lost.stop()
    rescuer = make_server(runner_name="rescuer", runner_lease=2)
    done = rescuer.wait_job(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    assert done["runner"] == "rescuer"
    assert done["attempt"] == held["attempt"] + 1
    assert done["max_attempts"] == 1
    assert done["interrupted_attempts"] == 1
    events = rescuer.events(job["id"])
    (lost_event,) = [e for e in events if e["type"] == "runner_lost"]
    assert lost_event["detail"]["runner"] == "gone"
    assert lost_event["detail"]["lost_attempt"] == held["attempt"]
    assert "attempt 2" in rescuer.logs(job["id"])
    listed = {r["name"]: r for r in rescuer.http.get("/v1/runners").json()["items"]}
    assert listed["gone"]["state"] in ("lost", "stopped")
    assert listed["gone"]["running"] == 0
    # The lost runner comes back: its old attempt is fenced out, its container removed.
    back = make_server(runner_name="gone", runner_lease=2)
    wait_for(lambda: not containers_of(docker_client, job["id"]), timeout=30)
    assert back.job(job["id"])["status"] == "succeeded"
    assert back.job(job["id"])["attempt"] == done["attempt"]


def test_past_the_interruption_limit_the_job_fails_saying_why(
    make_server: Callable[..., LiveServer],
) -> None:
    lost = make_server(runner_name="gone-too", runner_lease=2, interruption_limit=0)
    lost.register(sh("sleep 30", name="long"))
    job = lost.submit(definition="long")
    lost.wait_job(job["id"], {"running"})
    lost.stop()
    rescuer = make_server(runner_name="rescuer-too", runner_lease=2, interruption_limit=0)
    done = rescuer.wait_job(job["id"], timeout=60)
    assert done["status"] == "failed"
    assert "runner 'gone-too'" in done["error"]
    assert "lost" in done["error"]
    assert done["reason"] == "runner_lost"
    events = rescuer.events(job["id"])
    assert [e["type"] for e in events][-2:] == ["runner_lost", "failed"]
    assert [e["detail"]["reason"] for e in events[-2:]] == ["runner_lost", "runner_lost"]


def test_a_runner_takes_jobs_only_from_its_queues(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_name="picky", runner_queues="batch, default::urgent")
    for queue in ("batch", "urgent", "other"):
        assert (
            server.http.post("/v1/projects/default/queues", json={"name": queue}).status_code == 201
        )
    server.register(sh("true", name="noop"))
    jobs = {q: server.submit(definition="noop", queue=q) for q in ("batch", "urgent", "other")}
    assert server.wait_job(jobs["batch"]["id"])["status"] == "succeeded"
    assert server.wait_job(jobs["urgent"]["id"])["status"] == "succeeded"
    assert server.job(jobs["other"]["id"])["status"] == "queued"
    assert runner_view(server, "picky")["queues"] == ["batch", "default::urgent"]


def test_two_runners_never_share_a_name(make_server: Callable[..., LiveServer]) -> None:
    first = make_server(runner_name="twin", runner_lease=30)
    wait_for(lambda: runner_view(first, "twin")["state"] == "active")
    second = make_server(runner_name="twin", runner_lease=30)
    assert second.services.runner is not None
    wait_for(lambda: second.services.runner.status().state == "waiting_for_name")
    assert runner_view(first, "twin")["pid"] == first.services.runner.identity.pid
    # The first stops cleanly: the name is free at once.
    first.stop()
    wait_for(lambda: second.services.runner.status().state == "active", timeout=30)


def test_the_cli_lists_and_drains_runners(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_name="cli-runner", runner_capacity=2)
    env = {"ORCH_URL": server.url, "ORCH_DATA_DIR": str(server.settings.data_dir)}
    listed = CliRunner().invoke(app, ["runners", "ls"], env=env, catch_exceptions=False)
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.output.splitlines()
    assert header.split()[:3] == ["NAME", "STATE", "HOST"]
    (row,) = [r for r in rows if r.startswith("cli-runner ")]
    assert row.split()[1] == "active"
    drained = CliRunner().invoke(
        app, ["runners", "drain", "cli-runner"], env=env, catch_exceptions=False
    )
    assert drained.exit_code == 0, drained.output
    assert drained.output.startswith("runner cli-runner is draining")
    missing = CliRunner().invoke(app, ["runners", "drain", "nobody"], env=env)
    assert missing.exit_code != 0
    assert "runner 'nobody' not found" in missing.output
