"""A runner killed at any point of an attempt's start or finish path runs every job exactly once.

Each test crashes a runner process at one named point (``ORCH_TEST_CRASH_POINT``: it exits at
once, as kill -9 would), restarts it under the same name, and checks every job against the
engine's own event log (one container start per job) and against its record (its true exit
code, output and log; one attempt), and that no container or run directory is left behind.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Callable

import docker
import pytest

from orchestrator.rules.crash_points import CRASH_EXIT_CODE, POINTS
from orchestrator.runner.run_dirs import RunDirs

from ..conftest import TEST_IMAGE, LiveServer, containers_of, installation_of, wait_for
from ..hosts import RunnerProcess

LOCAL_ENGINE = "unix:///var/run/docker.sock"
# A runner process on SQLite hears of submits only by polling: poll often.
FAST = {"ORCH_POLL_INTERVAL": "0.2", "ORCH_LOG_FLUSH_INTERVAL": "0.1"}


def container_starts(client: docker.DockerClient, since: float, job_ids: set[str]) -> Counter[str]:
    """How many times the engine started a container of each of ``job_ids`` since ``since``."""
    events = client.events(
        since=int(since),
        until=int(time.time()) + 1,
        filters={"event": "start", "label": "orchestrator.job-id"},
        decode=True,
    )
    starts: Counter[str] = Counter()
    try:
        for event in events:
            job_id = event["Actor"]["Attributes"].get("orchestrator.job-id")
            if job_id in job_ids:
                starts[job_id] += 1
    finally:
        events.close()
    return starts


def crashed_runner(
    runner_processes: Callable[..., RunnerProcess], api: LiveServer, point: str, capacity: int = 1
) -> RunnerProcess:
    """A runner process on ``api``'s database, once it has crashed at ``point``."""
    runner = runner_processes(
        docker_host=LOCAL_ENGINE,
        name=f"crashy-{uuid.uuid4().hex[:8]}",
        database_url=str(api.settings.database_url),
        data_dir=api.settings.data_dir,
        capacity=capacity,
        env={**FAST, "ORCH_TEST_CRASH_POINT": point},
    )
    assert runner.wait(timeout=60) == CRASH_EXIT_CODE, runner.log_tail()
    assert f"crash point {point} reached" in runner.log_text()
    return runner


@pytest.mark.parametrize("point", POINTS)
def test_a_runner_crashed_at_any_point_runs_each_job_once_with_its_true_outcome(
    point: str,
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    api = make_server(runner_enabled=False)
    output = 'echo "{\\"n\\": 1}" > "$ORCH_OUTPUT"'
    api.register(
        {
            "name": "ok",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", f'echo "job $ORCH_JOB_ID"; sleep 1; {output}'],
        }
    )
    api.register(
        {
            "name": "fails",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo "job $ORCH_JOB_ID"; sleep 1; exit 3'],
        }
    )
    since = time.time() - 1
    submitted = {
        api.submit(definition=definition)["id"]: definition for definition in ("ok", "fails", "ok")
    }
    settings = api.settings
    runner = crashed_runner(runner_processes, api, point, capacity=3)

    del runner.env["ORCH_TEST_CRASH_POINT"]
    runner.restart()
    for job_id, definition in submitted.items():
        job = api.wait_job(job_id, timeout=90)
        assert job["attempt"] == 1, job
        assert api.logs(job_id) == f"job {job_id}\n"
        if definition == "ok":
            assert (job["status"], job["exit_code"], job["output"]) == ("succeeded", 0, {"n": 1})
        else:
            assert (job["status"], job["exit_code"]) == ("failed", 3), job
            assert job["error"] == "the container exited with code 3"

    assert container_starts(docker_client, since, set(submitted)) == Counter(
        dict.fromkeys(submitted, 1)
    )
    for job_id in submitted:
        wait_for(lambda job_id=job_id: containers_of(docker_client, job_id) == [], timeout=30)
    run_dirs = RunDirs(settings.data_dir, installation_of(settings), enabled=True)
    wait_for(lambda: run_dirs.names() == set(), timeout=30)


def test_a_container_created_but_never_started_is_removed_and_the_attempt_retried(
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    """The one case where the restarted runner starts a new container: the old one never ran."""
    api = make_server(runner_enabled=False)
    api.register({"name": "once", "image": TEST_IMAGE, "command": ["echo", "ran"]})
    since = time.time() - 1
    job_id = api.submit(definition="once")["id"]
    runner = crashed_runner(runner_processes, api, "created")
    (left,) = containers_of(docker_client, job_id)
    assert left.status == "created"
    first = left.id

    del runner.env["ORCH_TEST_CRASH_POINT"]
    runner.restart()
    job = api.wait_job(job_id, timeout=60)
    assert (job["status"], job["attempt"]) == ("succeeded", 1), job
    assert job["container_id"] != first
    events = [event["type"] for event in api.events(job_id)]
    assert "requeued" in events, events
    assert container_starts(docker_client, since, {job_id}) == Counter({job_id: 1})
