"""Dependencies with real containers: a chain passes its outputs forward, an input made of
outputs too large to hand in fails the job, and a dependency that ends while its runner
crashes still releases its dependents."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from orchestrator.rules.crash_points import CRASH_EXIT_CODE

from ..conftest import TEST_IMAGE, LiveServer
from ..hosts import RunnerProcess

QUEUES = "/v1/projects/default/queues"
# Writes what it was handed as its output, so each link of a chain shows what it got.
PASS_ON = 'cat "$ORCH_INPUT" > "$ORCH_OUTPUT"'
LOCAL_ENGINE = "unix:///var/run/docker.sock"


def test_a_chain_hands_each_job_the_outputs_of_the_one_before(server: LiveServer) -> None:
    server.register(
        {
            "name": "start",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo \'{"n": 1}\' > "$ORCH_OUTPUT"'],
        }
    )
    server.register({"name": "pass-on", "image": TEST_IMAGE, "command": ["sh", "-c", PASS_ON]})
    # The first link waits in a paused queue until the whole chain is submitted.
    server.http.post(QUEUES, json={"name": "held", "paused": True})
    a = server.submit(definition="start", queue="held")["id"]
    b = server.submit(definition="pass-on", depends_on=[{"job": a}], input={"from": [a]})
    c = server.submit(
        definition="pass-on", depends_on=[{"job": b["id"]}], input={"from": [b["id"]]}
    )
    assert (b["status"], c["status"]) == ("pending", "pending")
    assert b["input"] == {}

    server.http.patch(f"{QUEUES}/held", json={"paused": False})
    done = server.wait_job(c["id"])
    assert done["status"] == "succeeded", done
    assert server.job(b["id"])["output"] == {a: {"n": 1}}
    assert done["input"] == {b["id"]: {a: {"n": 1}}}
    assert done["output"] == {b["id"]: {a: {"n": 1}}}
    released = [event for event in server.events(c["id"]) if event["type"] == "queued"]
    assert [event["detail"] for event in released] == [{"released_by": b["id"]}]


def test_outputs_too_large_for_an_input_fail_the_job_before_its_container(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(max_input_bytes=1024)
    big = "x" * 700
    server.register(
        {
            "name": "big",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", f'echo \'{{"text": "{big}"}}\' > "$ORCH_OUTPUT"'],
        }
    )
    server.register({"name": "pass-on", "image": TEST_IMAGE, "command": ["sh", "-c", PASS_ON]})
    first = server.submit(definition="big")["id"]
    second = server.submit(definition="big")["id"]
    both = [first, second]
    reader = server.submit(
        definition="pass-on", depends_on=[{"job": i} for i in both], input={"from": both}
    )
    job = server.wait_job(reader["id"])
    assert (job["status"], job["reason"], job["attempt"]) == ("failed", "input_too_large", 1), job
    assert "over the limit of 1024 bytes (ORCH_MAX_INPUT_BYTES)" in job["error"]
    assert job["container_id"] is None


@pytest.mark.parametrize("point", ["output_read", "outcome_recorded"])
def test_a_dependency_ending_as_its_runner_crashes_still_releases_its_dependent(
    point: str,
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
) -> None:
    """``output_read``: the runner dies before the dependency's end is recorded; the restarted
    one records it and releases the dependent with it. ``outcome_recorded``: it dies right
    after the end is committed; the dependent was released in that same transaction."""
    api = make_server(runner_enabled=False)
    api.register(
        {
            "name": "start",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo \'{"n": 1}\' > "$ORCH_OUTPUT"'],
        }
    )
    api.register({"name": "pass-on", "image": TEST_IMAGE, "command": ["sh", "-c", PASS_ON]})
    first = api.submit(definition="start")["id"]
    dependent = api.submit(
        definition="pass-on", depends_on=[{"job": first}], input={"from": [first]}
    )
    runner = runner_processes(
        docker_host=LOCAL_ENGINE,
        name=f"crashy-{uuid.uuid4().hex[:8]}",
        database_url=str(api.settings.database_url),
        data_dir=api.settings.data_dir,
        env={"ORCH_POLL_INTERVAL": "0.2", "ORCH_TEST_CRASH_POINT": point},
    )
    assert runner.wait(timeout=60) == CRASH_EXIT_CODE, runner.log_tail()
    if point == "outcome_recorded":
        # Ended and released in one transaction: nothing was left for the crash to lose.
        assert api.job(first)["status"] == "succeeded"
        assert api.job(dependent["id"])["status"] == "queued"
    else:
        assert api.job(dependent["id"])["status"] == "pending"

    del runner.env["ORCH_TEST_CRASH_POINT"]
    runner.restart()
    done = api.wait_job(dependent["id"], timeout=90)
    assert done["status"] == "succeeded", done
    assert done["output"] == {first: {"n": 1}}
    assert api.job(first)["attempt"] == 1
