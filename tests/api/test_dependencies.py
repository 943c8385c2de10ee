"""``depends_on`` at the API: what a submission may name, how a dependent waits (``pending``)
and is shown, and what cancelling or deleting around it does. Dependencies are held back in a
paused queue, so nothing here waits on a container."""

from __future__ import annotations

from typing import Any

from ..conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"
QUEUES = "/v1/projects/default/queues"


def held_server(server: LiveServer) -> LiveServer:
    """The server with a definition ``quick`` and a paused queue ``held``: a job there waits,
    ``queued``, until the test says."""
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]})
    assert server.http.post(QUEUES, json={"name": "held", "paused": True}).status_code == 201
    return server


def submit(server: LiveServer, **body: Any) -> Any:
    return server.http.post(JOBS, json={"definition": "quick", **body})


def test_a_dependent_waits_pending_and_shows_its_dependencies(server: LiveServer) -> None:
    held_server(server)
    first = server.submit(definition="quick", queue="held")["id"]
    second = server.submit(definition="quick", queue="held")["id"]
    dependent = server.submit(
        definition="quick",
        queue="held",
        depends_on=[{"job": first}, {"job": second, "on": "finished"}],
    )
    assert dependent["status"] == "pending"
    assert dependent["depends_on"] == [
        {"job": first, "type": None, "on": "succeeded", "status": "queued"},
        {"job": second, "type": None, "on": "finished", "status": "queued"},
    ]
    assert server.job(first)["dependents"] == 1
    assert dependent["dependents"] == 0
    events = server.events(dependent["id"])
    assert [event["type"] for event in events] == ["created", "pending"]
    assert events[1]["detail"] == {"waiting_for": [first, second]}

    # Not queue length: a pending job waits for its dependencies, not for a runner.
    assert server.http.get(f"{QUEUES}/held").json()["current_queue_length"] == 2
    listed = server.http.get(JOBS, params={"status": "pending"}).json()["items"]
    assert [job["id"] for job in listed] == [dependent["id"]]

    # A pending job is cancelled at once; its dependency knows nothing of it.
    cancelled = server.http.post(f"{JOBS}/{dependent['id']}/cancel").json()
    assert (cancelled["status"], cancelled["reason"]) == ("cancelled", "cancelled")
    assert server.job(first)["status"] == "queued"


def test_cancelling_a_dependency_fails_its_chain_and_releases_who_only_waits_for_its_end(
    server: LiveServer,
) -> None:
    held_server(server)
    root = server.submit(definition="quick", queue="held")["id"]
    child = server.submit(definition="quick", queue="held", depends_on=[{"job": root}])["id"]
    grandchild = server.submit(definition="quick", queue="held", depends_on=[{"job": child}])["id"]
    waiter = server.submit(
        definition="quick", queue="held", depends_on=[{"job": root, "on": "finished"}]
    )["id"]

    assert server.http.post(f"{JOBS}/{root}/cancel").status_code == 200

    for job_id, dependency in ((child, root), (grandchild, child)):
        job = server.job(job_id)
        assert (job["status"], job["reason"]) == ("failed", "dependency_failed"), job
        assert (
            job["error"]
            == f"dependency {dependency} {'cancelled' if dependency == root else 'failed'}"
        )
        assert job["attempt"] == 0
        failed = server.events(job_id)[-1]
        assert failed["type"] == "failed"
        assert failed["detail"]["dependency"] == dependency
        assert failed["detail"]["reason"] == "dependency_failed"
    assert [event["type"] for event in server.events(grandchild)] == [
        "created",
        "pending",
        "failed",
    ]

    released = server.job(waiter)
    assert released["status"] == "queued"
    queued = server.events(waiter)[-1]
    assert (queued["type"], queued["detail"]) == ("queued", {"released_by": root})


def test_dependencies_that_already_ended_decide_at_submit(server: LiveServer) -> None:
    held_server(server)
    done = server.submit(definition="quick")["id"]
    assert server.wait_job(done)["status"] == "succeeded"
    cancelled = server.submit(definition="quick", queue="held")["id"]
    server.http.post(f"{JOBS}/{cancelled}/cancel")

    queued = server.submit(definition="quick", queue="held", depends_on=[{"job": done}])
    assert queued["status"] == "queued"
    assert [event["type"] for event in server.events(queued["id"])] == ["created", "queued"]

    later = server.submit(
        definition="quick",
        queue="held",
        depends_on=[{"job": done}],
        schedule_at="2999-01-01T00:00:00Z",
    )
    assert later["status"] == "scheduled"

    finished = server.submit(
        definition="quick", queue="held", depends_on=[{"job": cancelled, "on": "finished"}]
    )
    assert finished["status"] == "queued"

    failed = server.submit(definition="quick", depends_on=[{"job": done}, {"job": cancelled}])
    assert (failed["status"], failed["reason"]) == ("failed", "dependency_failed")
    assert failed["error"] == f"dependency {cancelled} cancelled"
    assert failed["attempt"] == 0


def test_what_depends_on_may_name(server: LiveServer) -> None:
    held_server(server)
    job = server.submit(definition="quick", queue="held")["id"]
    assert server.http.post("/v1/projects", json={"name": "other"}).status_code == 201
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]}, project="other")
    elsewhere = server.http.post(
        "/v1/projects/other/jobs",
        json={"definition": "quick", "schedule_at": "2999-01-01T00:00:00Z"},
    ).json()["id"]

    def refused(status: int, field: str, **body: Any) -> str:
        response = submit(server, **body)
        assert response.status_code == status, response.text
        assert response.json()["field"] == field, response.text
        return str(response.json()["message"])

    assert "not found" in refused(404, "depends_on", depends_on=[{"job": "no-such-job"}])
    # Another project's job is as unknown as a job that does not exist.
    assert elsewhere in refused(404, "depends_on", depends_on=[{"job": elsewhere}])
    assert "twice" in refused(400, "depends_on", depends_on=[{"job": job}, {"job": job}])
    message = refused(400, "depends_on.0.type", depends_on=[{"job": job, "type": "N_TO_N"}])
    assert "needs `array`" in message
    sequential = refused(400, "depends_on.0.job", depends_on=[{"job": job, "type": "SEQUENTIAL"}])
    assert "names no job" in sequential
    assert "needs `array`" in refused(400, "depends_on.0.type", depends_on=[{"type": "SEQUENTIAL"}])
    assert "required" in refused(400, "depends_on.0.job", depends_on=[{"on": "finished"}])
    refused(400, "depends_on.0.on", depends_on=[{"job": job, "on": "failed"}])
    refused(400, "depends_on.0.after", depends_on=[{"job": job, "after": 1}])

    many = [server.submit(definition="quick", queue="held")["id"] for _ in range(20)]
    assert submit(server, queue="held", depends_on=[{"job": i} for i in many]).status_code == 201
    message = refused(422, "depends_on", depends_on=[{"job": i} for i in [*many, job]])
    assert "21 jobs is over the limit of 20" in message

    message = refused(400, "input.from", depends_on=[{"job": job}], input={"from": [many[0]]})
    assert many[0] in message and "depends_on" in message
    refused(400, "input.from", depends_on=[{"job": job}], input={"from": job})
    # Without depends_on, {"from": ...} is an input like any other.
    plain = server.submit(definition="quick", queue="held", input={"from": ["x"]})
    assert plain["input"] == {"from": ["x"]}

    dry = server.http.post(
        JOBS, params={"dry_run": "true"}, json={"definition": "quick", "depends_on": [{"job": job}]}
    )
    assert (dry.status_code, dry.json()["status"]) == (200, "pending")
    dry = server.http.post(
        JOBS,
        params={"dry_run": "true"},
        json={"definition": "quick", "depends_on": [{"job": "nope"}]},
    )
    assert dry.status_code == 404


def test_deleting_a_dependency_that_ended_leaves_its_dependents_whole(server: LiveServer) -> None:
    held_server(server)
    server.register(
        {
            "name": "says",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", 'echo \'{"n": 7}\' > "$ORCH_OUTPUT"'],
        }
    )
    done = server.submit(definition="says")["id"]
    assert server.wait_job(done)["output"] == {"n": 7}
    waiting = server.submit(definition="quick", queue="held")["id"]
    dependent = server.submit(
        definition="quick",
        queue="held",
        depends_on=[{"job": done}, {"job": waiting}],
        input={"from": [done, waiting]},
    )
    # The input fills in as the dependencies end: the one that ended is in it already.
    assert dependent["input"] == {done: {"n": 7}}

    assert server.http.delete(f"{JOBS}/{done}").status_code == 204
    shown = server.job(dependent["id"])
    assert shown["status"] == "pending"
    assert shown["depends_on"][0] == {"job": done, "type": None, "on": "succeeded", "status": None}

    server.http.patch(f"{QUEUES}/held", json={"paused": False})
    ran = server.wait_job(dependent["id"])
    assert ran["status"] == "succeeded", ran
    assert ran["input"] == {done: {"n": 7}, waiting: None}
    assert server.http.delete(f"{JOBS}/{dependent['id']}").status_code == 204
    assert server.job(waiting)["dependents"] == 0


def test_a_schedule_s_job_target_may_depend_on_a_job(server: LiveServer) -> None:
    held_server(server)
    dependency = server.submit(definition="quick", queue="held")["id"]
    target = {"job": {"definition": "quick", "queue": "held", "depends_on": [{"job": dependency}]}}
    created = server.http.post(
        "/v1/projects/default/schedules",
        json={"name": "after", "cron": "0 0 1 1 *", "target": target},
    )
    assert created.status_code == 201, created.text
    run = server.http.post("/v1/projects/default/schedules/after/trigger").json()
    job = server.job(run["job_id"])
    assert job["status"] == "pending"
    assert [link["job"] for link in job["depends_on"]] == [dependency]

    refused = server.http.post(
        "/v1/projects/default/schedules",
        json={
            "name": "unknown",
            "cron": "0 0 1 1 *",
            "target": {"job": {"definition": "quick", "depends_on": [{"job": "nope"}]}},
        },
    )
    assert refused.status_code == 404, refused.text
