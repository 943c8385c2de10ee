"""Array jobs through a live server with its runner (real containers, SQLite and PostgreSQL):
a submit with ``array: {size: N}``, children that see their index, the parent's counts and
status, its children's page, a cancel of the whole array, a schedule that fires arrays, and
``DELETE`` of a finished parent.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import TEST_IMAGE, LiveServer, wait_for

JOBS = "/v1/projects/default/jobs"


def shard(server: LiveServer, name: str = "shard", script: str | None = None) -> None:
    """A definition whose job prints its index (from the env and from ``Param::``) and writes
    it as its output."""
    body = script or (
        'echo "index $ORCH_ARRAY_INDEX of $ORCH_ARRAY_SIZE arg $1"; '
        'echo "{\\"index\\": $ORCH_ARRAY_INDEX}" > "$ORCH_OUTPUT"'
    )
    server.register(
        {
            "name": name,
            "image": TEST_IMAGE,
            "command": ["sh", "-c", body, "shard", "Param::array_index"],
        }
    )


def children(server: LiveServer, parent: str, **params: Any) -> dict[str, Any]:
    response = server.http.get(f"{JOBS}/{parent}/children", params=params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_an_array_runs_each_child_with_its_index_and_the_parent_counts_them(
    server: LiveServer,
) -> None:
    shard(server)
    parent = server.submit(definition="shard", array={"size": 3})
    assert parent["array_size"] == 3 and parent["parent_id"] is None
    assert parent["children"]["size"] == 3
    assert parent["children"]["queued"] + parent["children"]["starting"] <= 3
    done = server.wait_job(parent["id"])
    assert done["status"] == "succeeded"
    assert done["children"] == {
        "size": 3,
        "pending": 0,
        "scheduled": 0,
        "queued": 0,
        "starting": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 0,
        "cancelled": 0,
    }
    listed = children(server, parent["id"])["items"]
    assert sorted(child["array_index"] for child in listed) == [0, 1, 2]
    for child in listed:
        assert child["parent_id"] == parent["id"] and child["array_size"] == 3
        index = child["array_index"]
        assert server.logs(child["id"]) == f"index {index} of 3 arg {index}\n"
        assert server.job(child["id"])["output"] == {"index": index}
    # The parent's events: created, queued, started (its first child), succeeded.
    types = [event["type"] for event in server.events(parent["id"])]
    assert types == ["created", "queued", "started", "succeeded"]
    # The job list shows the parent with its counts, not its children.
    page = server.http.get(JOBS).json()["items"]
    assert [job["id"] for job in page] == [parent["id"]]
    assert page[0]["children"]["succeeded"] == 3


def test_a_failing_child_fails_the_parent_and_retries_like_any_job(server: LiveServer) -> None:
    shard(server, "flaky", 'test "$ORCH_ARRAY_INDEX" != 1 || exit 3')
    # The array's own retry policy is each child's.
    retry = {"attempts": 2, "backoff": "100ms"}
    parent = server.submit(definition="flaky", array={"size": 3}, retry=retry)
    done = server.wait_job(parent["id"])
    assert done["status"] == "failed"
    assert done["children"]["failed"] == 1 and done["children"]["succeeded"] == 2
    failed = children(server, parent["id"], status="failed")["items"]
    assert [(child["array_index"], child["exit_code"]) for child in failed] == [(1, 3)]
    assert (failed[0]["attempt"], failed[0]["max_attempts"]) == (2, 2)
    every = children(server, parent["id"])["items"]
    assert [child["max_attempts"] for child in every] == [2, 2, 2]


def test_size_out_of_range_is_a_422_naming_array_size(server: LiveServer) -> None:
    shard(server)
    for size in (1, 10_001, 0):
        response = server.http.post(JOBS, json={"definition": "shard", "array": {"size": size}})
        assert response.status_code == 422, response.text
        assert response.json()["field"] == "array.size"
    # Param::array_index outside an array has no value.
    response = server.http.post(JOBS, json={"definition": "shard"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "parameters.array_index"
    assert server.http.get(JOBS).json()["items"] == []


def test_children_page_with_a_status_filter_and_404_for_other_jobs(server: LiveServer) -> None:
    shard(server)
    parent = server.submit(definition="shard", array={"size": 5})
    server.wait_job(parent["id"])
    first = children(server, parent["id"], limit=2)
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = children(server, parent["id"], limit=2, cursor=first["next_cursor"])
    third = children(server, parent["id"], limit=2, cursor=second["next_cursor"])
    assert third["next_cursor"] is None
    indexes = [c["array_index"] for page in (first, second, third) for c in page["items"]]
    assert indexes == [4, 3, 2, 1, 0]
    assert len(children(server, parent["id"], status="succeeded")["items"]) == 5
    assert children(server, parent["id"], status="failed")["items"] == []
    child = first["items"][0]["id"]
    for job_id in (child, "no-such-job"):
        response = server.http.get(f"{JOBS}/{job_id}/children")
        assert response.status_code == 404, response.text
        assert response.json()["field"] == "job"
    server.http.post("/v1/projects", json={"name": "other"}).raise_for_status()
    response = server.http.get(f"/v1/projects/other/jobs/{parent['id']}/children")
    assert response.status_code == 404
    # A finished parent is deleted with its children; a child alone is not.
    response = server.http.delete(f"{JOBS}/{child}")
    assert response.status_code == 409, response.text
    response = server.http.delete(f"{JOBS}/{parent['id']}")
    assert response.status_code == 204, response.text
    for job_id in (parent["id"], child):
        assert server.http.get(f"{JOBS}/{job_id}").status_code == 404


def test_cancelling_the_parent_cancels_every_unfinished_child(server: LiveServer) -> None:
    shard(server, "slow", "sleep 30")
    parent = server.submit(definition="slow", array={"size": 6}, queue="default")
    # The runner's capacity is 4: four children run, two wait.
    wait_for(lambda: server.job(parent["id"])["children"]["running"] == 4)
    response = server.http.post(f"{JOBS}/{parent['id']}/cancel")
    assert response.status_code == 200, response.text
    done = server.wait_job(parent["id"])
    assert done["status"] == "cancelled"
    assert done["children"]["cancelled"] == 6
    assert server.http.post(f"{JOBS}/{parent['id']}/cancel").status_code == 409


def test_cancelling_one_child_cancels_only_that_child(server: LiveServer) -> None:
    shard(server, "slow", "sleep 30")
    parent = server.submit(definition="slow", array={"size": 2})
    wait_for(lambda: server.job(parent["id"])["children"]["running"] == 2)
    one, other = children(server, parent["id"])["items"]
    server.http.post(f"{JOBS}/{one['id']}/cancel").raise_for_status()
    assert server.wait_job(one["id"])["status"] == "cancelled"
    assert server.job(other["id"])["status"] == "running"
    assert server.job(parent["id"])["status"] == "running"
    server.http.post(f"{JOBS}/{other['id']}/cancel").raise_for_status()
    # A cancelled child is not a cancel of the array: the parent fails.
    assert server.wait_job(parent["id"])["status"] == "failed"


def test_a_schedule_fires_an_array_job(server: LiveServer) -> None:
    shard(server)
    made = server.http.post(
        "/v1/projects/default/schedules",
        json={
            "name": "fan-out",
            "cron": "0 2 * * *",
            "target": {"job": {"definition": "shard", "array": {"size": 2}}},
        },
    )
    assert made.status_code == 201, made.text
    run = server.http.post("/v1/projects/default/schedules/fan-out/trigger")
    assert run.status_code == 202, run.text
    job_id = run.json()["job_id"]
    done = server.wait_job(job_id)
    assert (done["status"], done["array_size"], done["children"]["succeeded"]) == (
        "succeeded",
        2,
        2,
    )
    # A schedule with an array out of range is refused when it is made.
    bad = server.http.post(
        "/v1/projects/default/schedules",
        json={
            "name": "too-big",
            "cron": "0 2 * * *",
            "target": {"job": {"definition": "shard", "array": {"size": 1}}},
        },
    )
    assert bad.status_code == 422, bad.text
    assert bad.json()["field"] == "target.job.array.size"


def test_a_dry_run_of_an_array_shows_its_first_childs_container(server: LiveServer) -> None:
    shard(server)
    response = server.http.post(
        JOBS, params={"dry_run": "true"}, json={"definition": "shard", "array": {"size": 3}}
    )
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["array_size"] == 3
    container = shown["container"]
    # Child 0's: its index in the command and the environment, not the unfilled template.
    assert container["command"][-1] == "0"
    assert (container["env"]["ORCH_ARRAY_INDEX"], container["env"]["ORCH_ARRAY_SIZE"]) == ("0", "3")
    assert server.http.get(JOBS).json()["items"] == []
