"""Installations sharing one Docker engine never touch each other's containers, and a runner
cleans up after the attempts taken back from it, whatever name it comes back under.

An installation is one database: every container, HTTP worker and run directory it makes
carries its id (``orchestrator.installation``).
"""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.runner import attempt_outcome
from orchestrator.runner.run_dirs import RunDirs

from .. import workers
from ..conftest import TEST_IMAGE, LiveServer, containers_of, installation_of, wait_for
from ..hosts import RunnerProcess
from ..workers import worker_definition
from .test_crash_points import FAST, LOCAL_ENGINE, container_starts

worker_image = workers.worker_image

# Runs until the test releases it (``release``): through the other installation's restarts.
RELEASE_FILE = "/tmp/release"
LONG = {
    "name": "long",
    "image": TEST_IMAGE,
    "command": [
        "sh",
        "-c",
        f'echo "started $ORCH_JOB_ID"; until [ -e {RELEASE_FILE} ]; do sleep 0.2; done; '
        'echo "{\\"done\\": 1}" > $ORCH_OUTPUT',
    ],
}


def release(client: docker.DockerClient, job_id: str) -> None:
    """Let a running ``LONG`` job finish."""
    (container,) = containers_of(client, job_id)
    assert container.exec_run(["touch", RELEASE_FILE]).exit_code == 0


# The first attempt runs for a minute (until something ends it); any later one succeeds at once.
FIRST_ATTEMPT_HANGS = 'echo "attempt $ORCH_ATTEMPT"; [ "$ORCH_ATTEMPT" -gt 1 ] || sleep 60'


def idle_workers(client: docker.DockerClient, installation: str) -> list[Any]:
    """The installation's HTTP worker containers that are running."""
    labels = ["orchestrator.worker", f"orchestrator.installation={installation}"]
    return list(client.containers.list(filters={"label": labels}, ignore_removed=True))


def test_two_installations_with_default_settings_on_one_engine_leave_each_other_alone(
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
    worker_image: str,
    tmp_path: Path,
) -> None:
    """Both run under the default runner name (this host's), each with a running job and an
    idle HTTP worker; each is restarted and stopped in turn while the other's work goes on."""
    settings: dict[str, dict[str, Any]] = {
        "a": {"data_dir": tmp_path / "a", "runner_name": None},
        # The second installation's database is a SQLite file of its own.
        "b": {
            "data_dir": tmp_path / "b",
            "runner_name": None,
            "database_url": f"sqlite:///{tmp_path / 'b.db'}",
        },
    }
    servers = {key: make_server(**overrides) for key, overrides in settings.items()}
    names = {key: server.services.runner.name for key, server in servers.items()}  # type: ignore[union-attr]
    assert names == {"a": socket.gethostname(), "b": socket.gethostname()}
    installations = {key: installation_of(server.settings) for key, server in servers.items()}
    assert installations["a"] != installations["b"]

    since = time.time() - 1
    jobs: dict[str, list[str]] = {"a": [], "b": []}
    workers_before = {}

    def make_idle_worker(key: str) -> None:
        server = servers[key]
        served = server.wait_job(server.submit(definition="echo", input={"n": key})["id"])
        assert served["status"] == "succeeded", served
        (worker,) = idle_workers(docker_client, installations[key])
        workers_before[key] = worker.id

    for key, server in servers.items():
        server.register(worker_definition("echo", worker_image))
        server.register(LONG)
        make_idle_worker(key)
    for key, server in servers.items():
        jobs[key].append(server.submit(definition="long")["id"])

    def restart(key: str) -> None:
        servers[key].stop()
        servers[key] = make_server(**settings[key])
        # Reconciled (the adopted job is followed again) before the other one moves on.
        wait_for(lambda: servers[key].services.runner.status().state == "active", timeout=30)  # type: ignore[union-attr]

    for key, other in (("b", "a"), ("a", "b")):
        latest = jobs[other][-1]
        servers[other].wait_job(latest, {"running"})
        restart(key)
        # The other installation's running job and idle worker are untouched.
        assert servers[other].job(latest)["status"] == "running"
        (container,) = containers_of(docker_client, latest)
        assert container.status == "running"
        assert [w.id for w in idle_workers(docker_client, installations[other])] == [
            workers_before[other]
        ]
        # A server's workers end with it: the restarted one makes a new one.
        make_idle_worker(key)
        jobs[key].append(servers[key].submit(definition="long")["id"])

    # Stopping one removes its own worker, not the other's.
    servers["b"].stop()
    assert idle_workers(docker_client, installations["b"]) == []
    assert [w.id for w in idle_workers(docker_client, installations["a"])] == [workers_before["a"]]
    servers["b"] = make_server(**settings["b"])

    for key, server in servers.items():
        for job_id in jobs[key]:
            release(docker_client, job_id)
        for job_id in jobs[key]:
            done = server.wait_job(job_id, timeout=90)
            assert (done["status"], done["exit_code"], done["attempt"]) == ("succeeded", 0, 1)
            assert done["output"] == {"done": 1}
            assert server.logs(job_id) == f"started {job_id}\n"
    every_job = {job_id for ids in jobs.values() for job_id in ids}
    assert container_starts(docker_client, since, every_job) == Counter(dict.fromkeys(every_job, 1))


def test_the_containers_of_attempts_taken_back_are_removed_whatever_name_the_runner_returns_under(
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    """A runner is killed and never comes back under its name; another of the installation on
    the same engine takes its job back after the lease, runs the new attempt, and removes the
    old attempt's container (still running) and its run directory."""
    api = make_server(runner_enabled=False)
    api.register(
        {
            "name": "twice",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", FIRST_ATTEMPT_HANGS],
        }
    )
    job_id = api.submit(definition="twice")["id"]
    settings = api.settings
    common = {
        "docker_host": LOCAL_ENGINE,
        "database_url": str(settings.database_url),
        "data_dir": settings.data_dir,
        "env": {**FAST, "ORCH_RUNNER_LEASE": "2"},
    }
    gone = runner_processes(name=f"gone-{uuid.uuid4().hex[:8]}", **common)
    wait_for(lambda: "attempt 1" in api.logs(job_id), timeout=60)
    (first,) = containers_of(docker_client, job_id)
    run_dirs = RunDirs(settings.data_dir, installation_of(settings), enabled=True)
    assert run_dirs.names() == {f"orch-{job_id}-1"}
    gone.kill9()
    assert first.labels["orchestrator.runner"] == gone.name

    runner_processes(name=f"other-{uuid.uuid4().hex[:8]}", **common)
    wait_for(lambda: api.job(job_id)["attempt"] == 2, timeout=60)
    wait_for(
        lambda: first.id not in {c.id for c in containers_of(docker_client, job_id)}, timeout=30
    )
    wait_for(lambda: f"orch-{job_id}-1" not in run_dirs.names(), timeout=30)
    done = api.wait_job(job_id, timeout=90)
    assert (done["status"], done["attempt"]) == ("succeeded", 2), done
    reasons = [e["detail"].get("reason") for e in api.events(job_id) if e["type"] == "runner_lost"]
    assert len(reasons) == 1


def test_a_container_removed_or_killed_from_outside_is_an_interruption_not_a_failure(
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``docker rm -f`` or ``docker kill`` while the runner watches: the attempt is interrupted
    and the job runs again without using one of its attempts; our own cancel stays a cancel."""
    # Each outside kill makes the runner watch whether the engine is stopping. It keeps
    # answering here, so the verdict is the same after 1 s as after production's 5 s (the
    # engine that does stop, within the window: tests/runner/test_hosts.py).
    monkeypatch.setattr(attempt_outcome, "ENGINE_SHUTDOWN_WINDOW", 1.0)
    server = make_server()
    server.register(
        {
            "name": "victim",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", FIRST_ATTEMPT_HANGS],
        }
    )

    def interrupted_once(action: Callable[[Any], None], reason: str) -> None:
        job_id = server.submit(definition="victim")["id"]
        wait_for(lambda: "attempt 1" in server.logs(job_id), timeout=30)
        (container,) = containers_of(docker_client, job_id)
        action(container)
        done = server.wait_job(job_id, timeout=60)
        assert (done["status"], done["attempt"], done["exit_code"]) == ("succeeded", 2, 0), done
        events = server.events(job_id)
        (interrupted,) = [e for e in events if e["type"] == "interrupted"]
        assert interrupted["detail"]["reason"] == reason, interrupted
        assert not any(e["type"] == "failed" for e in events)

    interrupted_once(lambda c: c.remove(force=True), "container_vanished")
    interrupted_once(lambda c: c.kill(), "container_killed")
    interrupted_once(lambda c: c.stop(timeout=1), "container_killed")

    job_id = server.submit(definition="victim")["id"]
    wait_for(lambda: "attempt 1" in server.logs(job_id), timeout=30)
    assert server.http.post(f"/v1/projects/default/jobs/{job_id}/cancel").status_code == 200
    assert server.wait_job(job_id, timeout=60)["status"] == "cancelled"
