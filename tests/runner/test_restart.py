"""A server restart loses nothing: waiting jobs stay, running containers are adopted."""

from __future__ import annotations

from typing import Any

import docker

from ..conftest import TEST_IMAGE, containers_of, wait_for


def test_restart_adopts_running_containers_and_keeps_waiting_jobs(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    first = make_server(runner_capacity=1)
    first.register(
        {
            "name": "steady",
            "image": TEST_IMAGE,
            "command": [
                "sh",
                "-c",
                "echo before; sleep 3; echo after; echo '{\"n\": 1}' > $ORCH_OUTPUT; exit 4",
            ],
        }
    )
    running = first.submit(definition="steady")
    waiting = first.submit(definition="steady")
    wait_for(lambda: "before" in first.logs(running["id"]), timeout=30)
    first.stop()
    # The container outlives the server.
    (container,) = containers_of(docker_client, running["id"])
    assert container.status == "running"

    second = make_server(runner_capacity=1)
    adopted = second.wait_job(running["id"], timeout=30)
    assert adopted["status"] == "failed"
    assert adopted["exit_code"] == 4
    assert adopted["attempt"] == 1
    assert adopted["output"] == {"n": 1}
    assert second.logs(running["id"]) == "before\nafter\n"
    wait_for(lambda: containers_of(docker_client, running["id"]) == [], timeout=10)

    assert second.wait_job(waiting["id"], timeout=30)["exit_code"] == 4


def test_container_finished_while_the_server_was_down_is_collected(
    make_server: Any, docker_client: docker.DockerClient
) -> None:
    first = make_server()
    first.register(
        {"name": "short", "image": TEST_IMAGE, "command": ["sh", "-c", "echo hi; sleep 1"]}
    )
    job = first.submit(definition="short")
    wait_for(lambda: "hi" in first.logs(job["id"]), timeout=30)
    first.stop()
    (container,) = containers_of(docker_client, job["id"])
    container.wait(timeout=30)

    second = make_server()
    done = second.wait_job(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    assert second.logs(job["id"]) == "hi\n"
    wait_for(lambda: containers_of(docker_client, job["id"]) == [], timeout=10)
