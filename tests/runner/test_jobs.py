"""Jobs run as real containers: substitution, input/output, retries, timeouts, cancels, logs,
streams and secrets."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import docker
import httpx

from orchestrator.services.jobs import cancel as cancel_job

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for

CANARY = "canary-Zq8xP2-value"


def sh(script: str, **spec: Any) -> dict[str, Any]:
    """A definition running ``script`` with busybox sh."""
    return {"image": TEST_IMAGE, "command": ["sh", "-c", script], **spec}


def test_hello_with_parameter_substitution(server: LiveServer) -> None:
    server.register(
        {
            "name": "hello",
            "image": TEST_IMAGE,
            "command": ["echo", "Hello, Param::who!", "Ref::n"],
            "parameters": {"who": "world", "n": 1},
        }
    )
    default = server.submit(definition="hello")
    given = server.submit(definition="hello", parameters={"who": "a b; $(id)", "n": 2.5})
    assert default["command"] == ["echo", "Hello, world!", "1"]
    assert given["command"] == ["echo", "Hello, a b; $(id)!", "2.5"]
    assert server.wait_job(default["id"])["status"] == "succeeded"
    assert server.wait_job(given["id"])["status"] == "succeeded"
    assert server.logs(default["id"]) == "Hello, world! 1\n"
    # No shell: the value reached echo as one argument, unexpanded.
    assert server.logs(given["id"]) == "Hello, a b; $(id)! 2.5\n"


def test_job_json_has_every_documented_field(server: LiveServer) -> None:
    server.register(sh("exit 0", name="noop"))
    job = server.submit(
        definition="noop",
        name="first",
        env={"MODE": "fast"},
        input={"k": [1, 2]},
        metadata={"team": "data"},
        webhook="http://127.0.0.1:9/hook",
        priority=5,
        timeout="1m",
    )
    fields = {
        "id", "project", "queue", "definition", "name", "status", "attempt", "max_attempts",
        "command", "parameters", "env", "secret_env", "input", "metadata", "output", "exit_code",
        "error", "container_id", "create_time", "update_time", "start_time", "finish_time",
    }  # fmt: skip
    assert fields <= set(job)
    assert job["project"] == "default"
    assert job["queue"] == "default"
    assert job["definition"] == "noop:1"
    assert job["status"] in ("queued", "starting", "running", "succeeded")
    assert job["metadata"] == {"team": "data"}
    assert job["timeout"] == 60
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded"
    assert done["exit_code"] == 0
    assert done["attempt"] == 1
    assert done["container_id"]
    assert done["start_time"] and done["finish_time"]
    assert done["finish_time"] >= done["start_time"] >= done["create_time"]


def test_input_in_output_out_and_environment(server: LiveServer) -> None:
    script = (
        'cat "$ORCH_INPUT" > /tmp/in.json; '
        'printf \'{"input": %s, "job": "%s", "attempt": %s, "project": "%s", '
        '"queue": "%s", "in": "%s", "mode": "%s"}\' '
        '"$(cat $ORCH_INPUT)" "$ORCH_JOB_ID" "$ORCH_ATTEMPT" "$ORCH_PROJECT" "$ORCH_QUEUE" '
        '"$ORCH_INPUT" "$MODE" > "$ORCH_OUTPUT"'
    )
    server.register(sh(script, name="echo-input", env={"MODE": "default"}))
    job = server.submit(
        definition="echo-input", input={"text": "hi", "n": [1, 2]}, env={"MODE": "override"}
    )
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {
        "input": {"text": "hi", "n": [1, 2]},
        "job": job["id"],
        "attempt": 1,
        "project": "default",
        "queue": "default",
        "in": "/run/orchestrator/input.json",
        "mode": "override",
    }


def test_invalid_output_json_is_an_error_not_a_crash(server: LiveServer) -> None:
    server.register(sh('echo "{not json" > "$ORCH_OUTPUT"', name="bad-output"))
    job = server.submit(definition="bad-output")
    done = server.wait_job(job["id"])
    assert done["status"] == "failed"
    assert done["exit_code"] == 0
    assert "not valid JSON" in done["error"]
    assert done["output"] is None
    # The runner is still alive and runs the next job.
    server.register(sh('echo \'{"ok": true}\' > "$ORCH_OUTPUT"', name="good-output"))
    assert server.wait_job(server.submit(definition="good-output")["id"])["output"] == {"ok": True}


def test_non_zero_exit_fails_with_its_code(server: LiveServer) -> None:
    server.register(sh("echo failing >&2; exit 7", name="fail7"))
    done = server.wait_job(server.submit(definition="fail7")["id"])
    assert done["status"] == "failed"
    assert done["exit_code"] == 7
    assert "code 7" in done["error"]
    assert done["attempt"] == 1
    assert server.logs(done["id"]) == "failing\n"
    assert [e["type"] for e in server.events(done["id"])][-1] == "failed"


def test_retries_count_attempts_and_stop_at_the_limit(server: LiveServer) -> None:
    flaky = 'echo "attempt $ORCH_ATTEMPT"; [ "$ORCH_ATTEMPT" -ge 3 ] || exit 3'
    retry = {"attempts": 3, "on_exit_codes": [3], "backoff": "100ms"}
    server.register(sh(flaky, name="flaky", retry=retry))
    server.register(sh("exit 3", name="always-fails", retry=retry))
    server.register(sh("exit 4", name="wrong-code", retry=retry))
    flaky_job = server.submit(definition="flaky")
    always = server.submit(definition="always-fails")
    wrong = server.submit(definition="wrong-code")
    assert flaky_job["max_attempts"] == 3

    done = server.wait_job(flaky_job["id"])
    assert done["status"] == "succeeded"
    assert done["attempt"] == 3
    assert server.logs(done["id"]) == "attempt 1\nattempt 2\nattempt 3\n"
    types = [e["type"] for e in server.events(done["id"])]
    assert types.count("retrying") == 2
    assert types.count("started") == 3

    failed = server.wait_job(always["id"])
    assert failed["status"] == "failed"
    assert failed["attempt"] == 3
    assert failed["exit_code"] == 3

    not_retried = server.wait_job(wrong["id"])
    assert not_retried["status"] == "failed"
    assert not_retried["attempt"] == 1


def test_timeout_kills_the_container(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    server.register(sh("echo started; sleep 60", name="slow", timeout="1s"))
    job = server.submit(definition="slow")
    done = server.wait_job(job["id"], timeout=30)
    assert done["status"] == "failed"
    assert "timed out after 1s" in done["error"]
    types = [e["type"] for e in server.events(job["id"])]
    assert "timed_out" in types
    assert types[-1] == "failed"
    assert server.logs(job["id"]) == "started\n"
    # The container is removed once the outcome is committed, so just after it is visible.
    wait_for(lambda: containers_of(docker_client, job["id"]) == [], timeout=10)


def test_timeout_is_retried_when_the_policy_allows(server: LiveServer) -> None:
    server.register(
        sh(
            "sleep 60",
            name="slow-retry",
            timeout="500ms",
            retry={"attempts": 2, "backoff": "100ms"},
        )
    )
    done = server.wait_job(server.submit(definition="slow-retry")["id"], timeout=40)
    assert done["status"] == "failed"
    assert done["attempt"] == 2
    assert [e["type"] for e in server.events(done["id"])].count("timed_out") == 2


def test_submission_timeout_overrides_the_definition(server: LiveServer) -> None:
    server.register(sh("sleep 60", name="long", timeout="1h"))
    done = server.wait_job(server.submit(definition="long", timeout="1s")["id"], timeout=30)
    assert done["status"] == "failed"
    assert "timed out after 1s" in done["error"]


def test_cancel_a_waiting_job(server: LiveServer, docker_client: docker.DockerClient) -> None:
    server.register(sh("echo never", name="never"))
    server.http.post("/v1/projects/default/queues", json={"name": "held", "paused": True})
    job = server.submit(definition="never", queue="held")
    response = server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert response.json()["finish_time"] is not None
    again = server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert again.status_code == 409
    server.http.patch("/v1/projects/default/queues/held", json={"paused": False})
    assert server.job(job["id"])["status"] == "cancelled"
    assert containers_of(docker_client, job["id"]) == []
    assert [e["type"] for e in server.events(job["id"])] == ["created", "queued", "cancelled"]


def test_cancel_a_running_job_stops_and_removes_its_container(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    # sleep as PID 1 ignores SIGTERM: the runner must follow up with SIGKILL after the grace.
    server.register(sh("echo up; exec sleep 120", name="stubborn"))
    # A job that handles SIGTERM exits 0 but still ends cancelled.
    trap = "trap 'echo got TERM; exit 0' TERM; echo up; while true; do sleep 0.1; done"
    server.register(sh(trap, name="polite"))
    jobs = [server.submit(definition=name) for name in ("stubborn", "polite")]
    for job in jobs:
        wait_for(lambda j=job: "up" in server.logs(j["id"]), timeout=30)
        assert len(containers_of(docker_client, job["id"])) == 1
        response = server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
        assert response.status_code == 200
        assert response.json()["status"] == "running"
    for job in jobs:
        done = server.wait_job(job["id"], timeout=30)
        assert done["status"] == "cancelled"
        types = [e["type"] for e in server.events(job["id"])]
        assert types[-2:] == ["cancel_requested", "cancelled"]
        wait_for(lambda j=job: containers_of(docker_client, j["id"]) == [], timeout=10)
    assert "got TERM" in server.logs(jobs[1]["id"])


def test_a_cancel_no_wake_up_announced_is_still_delivered_by_the_poll(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    # As another process on SQLite asks it (no relay): stored, but this process's hub is not
    # told. The runner reads requested cancels on a publish, and at least every poll interval.
    server.register(sh("echo up; exec sleep 120", name="unannounced"))
    job = server.submit(definition="unannounced")
    wait_for(lambda: "up" in server.logs(job["id"]), timeout=30)
    with server.services.db.transaction() as session:
        cancel_job(session, None, "default", job["id"])
    done = server.wait_job(job["id"], timeout=30)
    assert done["status"] == "cancelled"
    wait_for(lambda: containers_of(docker_client, job["id"]) == [], timeout=10)


def test_containers_are_labelled_limited_and_removed(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    server.register(
        sh(
            "echo up; sleep 60",
            name="limited",
            resources={"memory": "64Mi", "cpus": 0.5, "pids": 50, "shm_size": "16Mi"},
            labels={"team": "data"},
            network="none",
            working_dir="/tmp",
        )
    )
    job = server.submit(definition="limited")
    wait_for(lambda: "up" in server.logs(job["id"]), timeout=30)
    (container,) = containers_of(docker_client, job["id"])
    host = container.attrs["HostConfig"]
    assert host["Memory"] == 64 * 2**20
    assert host["NanoCpus"] == 500_000_000
    assert host["PidsLimit"] == 50
    assert host["ShmSize"] == 16 * 2**20
    assert host["NetworkMode"] == "none"
    assert container.attrs["Config"]["WorkingDir"] == "/tmp"
    labels = container.labels
    assert labels["orchestrator.job-id"] == job["id"]
    assert labels["orchestrator.attempt"] == "1"
    assert labels["orchestrator.runner"] == server.settings.runner_name
    assert labels["team"] == "data"
    server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    server.wait_job(job["id"])
    wait_for(lambda: containers_of(docker_client, job["id"]) == [], timeout=10)


def test_missing_image_fails_naming_the_image(server: LiveServer) -> None:
    server.register(
        {"name": "ghost", "image": "no-such-registry.invalid/ghost:9", "command": ["x"]}
    )
    done = server.wait_job(server.submit(definition="ghost")["id"], timeout=90)
    assert done["status"] == "failed"
    assert "no-such-registry.invalid/ghost:9" in done["error"]


def test_bad_command_fails_the_job(server: LiveServer) -> None:
    server.register({"name": "typo", "image": TEST_IMAGE, "command": ["no-such-binary"]})
    done = server.wait_job(server.submit(definition="typo")["id"])
    assert done["status"] == "failed"
    assert done["error"]


def test_command_override_still_substitutes(server: LiveServer) -> None:
    server.register(sh("echo default", name="override", parameters={"x": "from-default"}))
    job = server.submit(definition="override", command=["echo", "Param::x", "Param::y"],
                        parameters={"y": "given"})  # fmt: skip
    assert job["command"] == ["echo", "from-default", "given"]
    assert server.logs(server.wait_job(job["id"])["id"]) == "from-default given\n"


def test_secret_is_masked_everywhere(server: LiveServer) -> None:
    # Printed whole, split across two writes, on stderr, and in the output.
    script = (
        'echo "token=$API_TOKEN"; '
        'printf "split=%s" "${API_TOKEN%%-value}"; sleep 0.3; echo "-value"; '
        'echo "err=$API_TOKEN" >&2; '
        'printf \'{"echo": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"'
    )
    server.register(sh(script, name="secretive", secrets=["API_TOKEN"]))
    job = server.submit(definition="secretive", secret_env={"API_TOKEN": CANARY})
    assert job["secret_env"] == {"API_TOKEN": "***"}
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    logs = server.logs(job["id"])
    assert "token=***" in logs
    assert "split=***" in logs
    assert "err=***" in logs
    assert done["output"] == {"echo": "***"}
    everything = [
        server.http.get(f"/v1/projects/default/jobs/{job['id']}").text,
        server.http.get("/v1/projects/default/jobs").text,
        server.http.get(f"/v1/projects/default/jobs/{job['id']}/events").text,
        server.http.get(f"/v1/projects/default/jobs/{job['id']}/logs").text,
        server.http.get(f"/v1/projects/default/jobs/{job['id']}/stream").text,
        json.dumps(done),
    ]
    for text in everything:
        assert CANARY not in text
        assert "canary-Zq8xP2" not in text


def test_logs_follow_streams_until_the_job_ends(server: LiveServer) -> None:
    server.register(sh("for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done", name="ticker"))
    job = server.submit(definition="ticker")
    received: list[str] = []
    url = f"/v1/projects/default/jobs/{job['id']}/logs"
    with server.http.stream("GET", url, params={"follow": "true"}, timeout=60) as response:
        assert response.status_code == 200
        for chunk in response.iter_text():
            received.append(chunk)
            if len(received) == 1:
                # The first lines arrive while the job still runs.
                assert server.job(job["id"])["status"] in ("running", "starting")
    assert "".join(received) == "".join(f"line {i}\n" for i in range(1, 6))
    assert server.job(job["id"])["status"] == "succeeded"


def read_sse(response: httpx.Response) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    for line in response.iter_lines():
        if line.startswith("id: "):
            current["id"] = int(line[4:])
        elif line.startswith("event: "):
            current["event"] = line[7:]
        elif line.startswith("data: "):
            current["data"] = json.loads(line[6:])
        elif line == "" and current:
            events.append(current)
            current = {}
    return events


def test_stream_sends_each_event_and_closes_at_the_end(server: LiveServer) -> None:
    server.register(
        sh("sleep 0.5; exit 1", name="streamed", retry={"attempts": 2, "backoff": "100ms"})
    )
    job = server.submit(definition="streamed")
    url = f"/v1/projects/default/jobs/{job['id']}/stream"
    with server.http.stream("GET", url, timeout=60) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = read_sse(response)
    types = [e["event"] for e in events]
    assert types[:2] == ["created", "queued"]
    assert types.count("started") == 2
    assert "retrying" in types
    assert types[-1] == "failed"
    assert events[-1]["data"]["status"] == "failed"
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    # Resuming after an event id replays only what came after it.
    with server.http.stream(
        "GET", url, headers={"Last-Event-ID": str(events[-2]["id"])}, timeout=60
    ) as response:
        assert [e["event"] for e in read_sse(response)] == ["failed"]


def test_unique_name_among_unfinished_jobs(server: LiveServer) -> None:
    server.register(sh("sleep 1", name="named"))
    first = server.submit(definition="named", name="nightly")
    clash = server.http.post(
        "/v1/projects/default/jobs", json={"definition": "named", "name": "nightly"}
    )
    assert clash.status_code == 409
    assert "nightly" in clash.json()["message"]
    server.wait_job(first["id"])
    assert server.submit(definition="named", name="nightly")["name"] == "nightly"


def test_queue_default_definition_lets_a_job_be_just_input(server: LiveServer) -> None:
    server.register(sh('cp "$ORCH_INPUT" "$ORCH_OUTPUT"', name="copy"))
    created = server.http.post(
        "/v1/projects/default/queues", json={"name": "copies", "default_definition": "copy"}
    )
    assert created.status_code == 201, created.text
    job = server.submit(queue="copies", input={"a": 1})
    assert job["definition"] == "copy:1"
    assert server.wait_job(job["id"])["output"] == {"a": 1}


def test_submit_finds_the_definition_version_and_names_what_is_missing(
    server: LiveServer,
) -> None:
    server.register(sh("exit 0", name="pick"))
    server.register(sh("exit 1", name="pick"))
    assert server.submit(definition="pick")["definition"] == "pick:2"
    assert server.submit(definition="pick:1")["definition"] == "pick:1"
    # The queue's default definition when the submission names none.
    created = server.http.post(
        "/v1/projects/default/queues", json={"name": "picks", "default_definition": "pick:1"}
    )
    assert created.status_code == 201, created.text
    assert server.submit(queue="picks")["definition"] == "pick:1"

    def refused(project: str, body: dict[str, Any]) -> tuple[int, str | None, str]:
        response = server.http.post(f"/v1/projects/{project}/jobs", json=body)
        error = response.json()
        return response.status_code, error["field"], error["message"]

    missing = "not found in project 'default'"
    assert refused("default", {"definition": "pick:3"}) == (
        404, "definition", f"definition 'pick:3' {missing}"
    )  # fmt: skip
    assert refused("default", {"definition": "pick:0"}) == (
        404, "definition", f"definition 'pick:0' {missing}"
    )  # fmt: skip
    assert refused("default", {"definition": "nope"}) == (
        404, "definition", f"definition 'nope' {missing}"
    )  # fmt: skip
    # What is missing first is what is said: the project, then the queue, then the definition.
    assert refused("default", {"definition": "nope", "queue": "nope"}) == (
        404, "queue", f"queue 'nope' {missing}"
    )  # fmt: skip
    assert refused("default", {"definition": "Not A Name", "queue": "nope"})[:2] == (404, "queue")
    assert refused("nope", {"definition": "pick"})[:2] == (404, "project")
    assert refused("default", {"definition": "Not A Name"})[:2] == (400, "definition")


def test_list_jobs_newest_first_with_filters_and_cursor(server: LiveServer) -> None:
    server.register(sh("exit 0", name="quick"))
    server.http.post("/v1/projects/default/queues", json={"name": "parked", "paused": True})
    ids = [server.submit(definition="quick", queue="parked")["id"] for _ in range(5)]
    page = server.http.get("/v1/projects/default/jobs", params={"limit": 2, "queue": "parked"})
    body = page.json()
    assert [j["id"] for j in body["items"]] == ids[::-1][:2]
    seen = [j["id"] for j in body["items"]]
    while body["next_cursor"]:
        body = server.http.get(
            "/v1/projects/default/jobs",
            params={"limit": 2, "queue": "parked", "cursor": body["next_cursor"]},
        ).json()
        seen += [j["id"] for j in body["items"]]
    assert seen == ids[::-1]
    queued = server.http.get("/v1/projects/default/jobs", params={"status": "queued"}).json()
    assert {j["id"] for j in queued["items"]} == set(ids)
    done = server.http.get("/v1/projects/default/jobs", params={"status": "succeeded"}).json()
    assert done["items"] == []


def test_schedule_at_holds_the_job_until_its_time(server: LiveServer) -> None:
    server.register(sh("echo ran", name="later"))
    at = time.time() + 1.5
    job = server.submit(definition="later", schedule_at=at)
    assert job["status"] == "scheduled"
    assert job["schedule_at"] is not None
    done = server.wait_job(job["id"], timeout=30)
    assert done["status"] == "succeeded"
    started = datetime.fromisoformat(done["start_time"]).timestamp()
    assert started >= at
    types = [e["type"] for e in server.events(job["id"])]
    assert types[:3] == ["created", "scheduled", "queued"]
    past = server.submit(definition="later", schedule_at="2020-01-01T00:00:00Z")
    assert past["status"] == "queued"
