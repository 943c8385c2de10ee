"""Array children on real runners (SQLite and PostgreSQL): the queue's ``max_concurrency`` holds
for them as for any job, and a runner killed while children run loses none and runs none twice
(its restart adopts their containers).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import docker

from ..conftest import TEST_IMAGE, LiveServer, wait_for
from ..hosts import RunnerProcess
from .test_crash_points import FAST, LOCAL_ENGINE, container_starts
from .test_queues import _max_overlap

JOBS = "/v1/projects/default/jobs"


def children(server: LiveServer, parent: str) -> list[dict[str, Any]]:
    response = server.http.get(f"{JOBS}/{parent}/children", params={"limit": 100})
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_the_queues_max_concurrency_holds_for_children(make_server: Any) -> None:
    server = make_server(runner_capacity=6)
    server.register({"name": "nap", "image": TEST_IMAGE, "command": ["sleep", "0.5"]})
    made = server.http.post(
        "/v1/projects/default/queues", json={"name": "narrow", "max_concurrency": 2}
    )
    assert made.status_code == 201, made.text
    peaks: list[int] = []

    def watch() -> bool:
        queue = server.http.get("/v1/projects/default/queues/narrow").json()
        peaks.append(queue["running"])
        return server.job(parent["id"])["status"] == "succeeded"

    parent = server.submit(definition="nap", queue="narrow", array={"size": 6})
    wait_for(watch, timeout=120, interval=0.1)
    # The parent is never counted: the queue's running count is its children's.
    assert max(peaks) <= 2
    ids = [child["id"] for child in children(server, parent["id"])]
    assert len(ids) == 6
    assert _max_overlap(server, ids) == 2


def test_a_runner_killed_while_children_run_loses_none_and_runs_none_twice(
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    api = make_server(runner_enabled=False)
    api.register(
        {
            "name": "shard",
            "image": TEST_IMAGE,
            "command": [
                "sh",
                "-c",
                'echo "shard $1"; sleep 3; echo "{\\"shard\\": $1}" > "$ORCH_OUTPUT"',
                "shard",
                "Param::array_index",
            ],
        }
    )
    since = time.time()
    parent = api.submit(definition="shard", array={"size": 4})
    settings = api.settings
    runner = runner_processes(
        docker_host=LOCAL_ENGINE,
        name=f"arrays-{uuid.uuid4().hex[:8]}",
        database_url=str(settings.database_url),
        data_dir=settings.data_dir,
        capacity=4,
        env=FAST,
    )
    wait_for(lambda: api.job(parent["id"])["children"]["running"] == 4, timeout=60)
    runner.kill9()
    runner.restart()
    done = api.wait_job(parent["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["children"]["succeeded"] == 4
    ids = set()
    for child in children(api, parent["id"]):
        ids.add(child["id"])
        job = api.job(child["id"])
        index = child["array_index"]
        assert (job["status"], job["attempt"], job["output"]) == ("succeeded", 1, {"shard": index})
        assert api.logs(child["id"]) == f"shard {index}\n"
        assert "runner_lost" not in [e["type"] for e in api.events(child["id"])]
    # Each child's container started once; the parent never had one.
    assert container_starts(docker_client, since, ids | {parent["id"]}) == dict.fromkeys(ids, 1)
    assert [e["type"] for e in api.events(parent["id"])].count("succeeded") == 1
