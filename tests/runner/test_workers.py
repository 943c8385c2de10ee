"""HTTP worker definitions on a live server: the runner keeps worker containers and POSTs each
job's input to one of them, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import docker

from .. import workers
from ..conftest import LiveServer, wait_for
from ..workers import WORKER_PATH, WORKER_PORT, worker_definition

# The fixture, for the tests of this module.
worker_image = workers.worker_image

# Fast retries, so a retried attempt does not wait for the default backoff.
FAST_RETRY = {"attempts": 2, "backoff": "100ms"}


def workers_of(client: docker.DockerClient, server: LiveServer) -> list[Any]:
    """The worker containers (running or not) of the server's runner."""
    labels = ["orchestrator.worker", f"orchestrator.runner={server.settings.runner_name}"]
    return list(client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))


def started_containers(server: LiveServer, job_id: str) -> list[str]:
    """The container id of each ``started`` event of the job, in order."""
    events = server.events(job_id)
    return [e["detail"]["container_id"] for e in events if e["type"] == "started"]


def test_worker_answers_become_output_and_one_container_serves_both_jobs(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    registered = server.register(worker_definition("echo", worker_image))
    assert registered["spec"]["retry"]["attempts"] == 4
    first = server.submit(definition="echo", input={"echo": {"n": [1, 2], "s": "x"}})
    done = server.wait_job(first["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"echo": {"n": [1, 2], "s": "x"}}
    text = server.wait_job(server.submit(definition="echo", input={"text": "plain words"})["id"])
    assert text["status"] == "succeeded", text
    assert text["output"] == "plain words"
    # One container served both, one job at a time, and it is still there for the next one.
    assert text["container_id"] == done["container_id"]
    assert started_containers(server, first["id"]) == [done["container_id"]]
    started = next(e for e in server.events(text["id"]) if e["type"] == "started")
    assert started["detail"]["worker"].startswith("orch-worker-echo-")
    (worker,) = workers_of(docker_client, server)
    assert worker.id == done["container_id"]
    assert worker.status == "running"
    # Each job's log is what the worker wrote while serving it.
    wait_for(lambda: 'worker served: {"echo"' in server.logs(first["id"]), timeout=10)
    assert "worker served: " + '{"text": "plain words"}' in server.logs(text["id"])
    assert "echo" not in server.logs(text["id"])


def test_two_replicas_serve_two_jobs_at_once(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    server.register(
        worker_definition("pair", worker_image, replicas=2, readiness_path="/ready.txt")
    )
    submitted = [server.submit(definition="pair", input={"sleep": 3, "i": i}) for i in range(2)]

    def both_running() -> bool:
        return all(server.job(job["id"])["status"] == "running" for job in submitted)

    wait_for(both_running, timeout=30)
    finished = [server.wait_job(job["id"]) for job in submitted]
    assert [job["status"] for job in finished] == ["succeeded", "succeeded"]
    assert finished[0]["container_id"] != finished[1]["container_id"]
    assert len(workers_of(docker_client, server)) == 2


def test_non_2xx_answers_are_retried_then_fail_with_the_status(
    server: LiveServer, worker_image: str
) -> None:
    server.register({**worker_definition("broken", worker_image), "retry": FAST_RETRY})
    job = server.wait_job(server.submit(definition="broken", input={"status": 503})["id"])
    assert job["status"] == "failed"
    assert job["attempt"] == 2
    assert "the worker answered HTTP 503" in job["error"]
    assert job["reason"] == "worker_failed"
    assert [e["type"] for e in server.events(job["id"])].count("retrying") == 1
    # A worker that answers is healthy: the same container served both attempts.
    first, second = started_containers(server, job["id"])
    assert first == second


def test_a_worker_that_dies_mid_job_is_replaced_for_the_retry(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    server.register({**worker_definition("fragile", worker_image), "retry": FAST_RETRY})
    job = server.submit(definition="fragile", input={"die": 1, "echo": "again"})
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["attempt"] == 2
    assert done["output"] == {"die": 1, "echo": "again"}
    retrying = next(e for e in server.events(job["id"]) if e["type"] == "retrying")
    assert "exited" in retrying["detail"]["error"]
    assert retrying["detail"]["reason"] == "worker_failed"
    first, second = started_containers(server, job["id"])
    assert first != second
    assert [w.id for w in workers_of(docker_client, server)] == [second]


def test_secret_values_are_masked_and_an_idle_worker_is_stopped(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    spec = worker_definition("brief", worker_image, idle_timeout="2s")
    server.register({**spec, "secrets": ["TOKEN"]})
    secret = "s3cret-value-42"
    job = server.submit(definition="brief", input={"echo": secret}, secret_env={"TOKEN": secret})
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded"
    assert done["output"] == {"echo": "***"}
    wait_for(lambda: 'worker served: {"echo": "***"}' in server.logs(job["id"]), timeout=10)
    assert secret not in server.logs(job["id"])
    wait_for(lambda: workers_of(docker_client, server) == [], timeout=30)


def test_timeout_and_cancel_abandon_the_request_and_replace_the_worker(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    server.register(
        {**worker_definition("slow", worker_image), "retry": {"attempts": 1}, "timeout": "1s"}
    )
    timed_out = server.wait_job(server.submit(definition="slow", input={"sleep": 30})["id"])
    assert timed_out["status"] == "failed"
    assert timed_out["error"] == "timed out after 1s"
    assert "timed_out" in [e["type"] for e in server.events(timed_out["id"])]

    job = server.submit(definition="slow", input={"sleep": 30}, timeout=60)
    running = server.wait_job(job["id"], {"running"})
    response = server.api.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert response.status_code == 200, response.text
    assert server.wait_job(job["id"])["status"] == "cancelled"
    # Both containers were left busy: neither serves again.
    ids = {timed_out["container_id"], running["container_id"]}
    wait_for(lambda: not ids & {w.id for w in workers_of(docker_client, server)}, timeout=30)


def test_a_worker_that_never_gets_ready_fails_the_attempt(
    make_server: Any, worker_image: str, docker_client: docker.DockerClient
) -> None:
    server = make_server(worker_ready_timeout=1.0)
    spec = worker_definition("sleepy", worker_image, readiness_path="/ready.txt")
    server.register({**spec, "env": {"START_DELAY": "60"}, "retry": {"attempts": 1}})
    job = server.wait_job(server.submit(definition="sleepy", input={})["id"])
    assert job["status"] == "failed"
    assert "was not ready within 1s (/ready.txt did not answer)" in job["error"]
    assert job["reason"] == "create_failed"
    wait_for(lambda: workers_of(docker_client, server) == [], timeout=30)


def test_runner_stop_removes_its_workers_and_gives_the_job_back(
    make_server: Any, worker_image: str, docker_client: docker.DockerClient
) -> None:
    first = make_server()
    first.register(worker_definition("long", worker_image))
    job = first.submit(definition="long", input={"sleep": 60})
    first.wait_job(job["id"], {"running"})
    # Paused, so that the next server only reconciles.
    paused = first.api.patch("/v1/projects/default/queues/default", json={"paused": True})
    assert paused.status_code == 200, paused.text
    first.stop()
    assert workers_of(docker_client, first) == []
    # A worker left behind by an earlier process of the runner (killed, say) is removed.
    leftover = docker_client.containers.run(
        worker_image,
        detach=True,
        labels={
            "orchestrator.worker": "long:1",
            "orchestrator.runner": first.settings.runner_name,
            "orchestrator.runner-session": "an-earlier-process",
        },
    )
    second = make_server()
    wait_for(lambda: workers_of(docker_client, second) == [], timeout=30)
    given_back = second.job(job["id"])
    assert (given_back["status"], given_back["reason"]) == ("queued", "runner_stopped")
    interrupted = next(e for e in second.events(job["id"]) if e["type"] == "interrupted")
    assert interrupted["detail"]["reason"] == "runner_stopped"
    assert leftover.id not in {c.id for c in docker_client.containers.list(all=True)}


BAD_SECTIONS = [
    ({"worker": {"port": 0}}, "worker.port"),
    ({"worker": {"port": 70000}}, "worker.port"),
    ({"worker": {"path": WORKER_PATH}}, "worker.port"),
    ({"worker": {"port": WORKER_PORT, "path": "run"}}, "worker.path"),
    ({"worker": {"port": WORKER_PORT, "readiness_path": "ready"}}, "worker.readiness_path"),
    ({"worker": {"port": WORKER_PORT, "replicas": 0}}, "worker.replicas"),
    ({"worker": {"port": WORKER_PORT, "replicas": 1000}}, "worker.replicas"),
    ({"worker": {"port": WORKER_PORT, "idle_timeout": "soon"}}, "worker.idle_timeout"),
    ({"worker": {"port": WORKER_PORT, "size": 1}}, "worker.size"),
    ({"network": "none"}, "network"),
]


def test_bad_worker_sections_are_refused_naming_the_field(server: LiveServer) -> None:
    for change, field in BAD_SECTIONS:
        spec = {**worker_definition("bad", "busybox:1.36"), **change}
        response = server.api.post("/v1/projects/default/definitions", json=spec)
        assert response.status_code == 400, (change, response.text)
        assert response.json()["field"] == field, change
        assert field in response.json()["message"], change
