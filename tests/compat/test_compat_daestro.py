"""Daestro's drop-in client API on a live server: the seed's own request bodies sent as written
(only the host changed), run in real containers; Daestro's variables in the environment, sensitive
values write-only, the state mapping, cancel and Daestro's error shape."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.conftest import TEST_IMAGE, LiveServer, admin_token, bearer, wait_for

# The seed's curl example, as written.
SEED_CURL_BODY = """{
  "job_definition": "my-project::hello-world:1",
  "job_queue": "my-project::first-job-queue",
  "container_cmd": ["uname", "Param::subcommand"],
  "container_env": {
    "file": {
      "value": "https://example.com/paint.jpg"
    },
    "access_token": {
      "value": "sensitive-vars-will-be-encrypted",
      "sensitive": true
    }
  },
  "container_cmd_parameter": {
    "subcommand": "-a"
  }
}"""
# The seed's "Example Body", as written: its comment makes it JSON no server parses.
SEED_EXAMPLE_BODY = """{
  "job_definition": "project-code::hello-world:1",
  "job_queue": "project-code::your-job-queue",
  "container_cmd": ["uname", "Param::subcommand"],
  "container_cmd_parameter": {
    "subcommand": "-a"
  },
  "container_env": {
    "file": {
      "value": "https://example.com/paint.jpg"
    },
    "access_token": {
      "value": "sensitive-vars-will-be-not-shown-again",
      "sensitive": true
    }
  },
  "schedule_at": "2025-05-17T06:37:00.000Z" // or unix timestamp
}"""
JOB_FIELDS = {"id", "name", "state", "system_note", "schedule_at", "created_at", "updated_at"}
SECRET = "s3cr3t-daestro-token-value"


def setup_project(server: LiveServer, project: str, queue: str, **definition: Any) -> None:
    """A project with a queue and the definition ``hello-world`` (version 1) on busybox."""
    made = server.http.post("/v1/projects", json={"name": project})
    assert made.status_code == 201, made.text
    made = server.http.post(f"/v1/projects/{project}/queues", json={"name": queue})
    assert made.status_code == 201, made.text
    server.register({"name": "hello-world", "image": TEST_IMAGE, **definition}, project=project)


def post_raw(server: LiveServer, body: str, token: str | None = None) -> httpx.Response:
    """``curl --request POST --url <host>/v1/client/job`` with the seed's headers and ``body``."""
    return server.anonymous.post(
        f"{server.url}/v1/client/job",
        headers={
            "authorization": f"Bearer {token or admin_token(server.settings)}",
            "content-type": "application/json",
        },
        content=body,
        timeout=30,
    )


def submit(server: LiveServer, **body: Any) -> str:
    """Submit through Daestro's API; assert 202 and Daestro's envelope; the job's id."""
    response = server.http.post("/v1/client/job", json=body)
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["ok"] is True and set(answer["data"]) == {"id"}
    return str(answer["data"]["id"])


def daestro_job(server: LiveServer, job_id: str) -> dict[str, Any]:
    response = server.http.get(f"/v1/client/job/{job_id}")
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["ok"] is True and set(answer["data"]) == JOB_FIELDS
    return dict(answer["data"])


def wait_state(server: LiveServer, job_id: str, states: set[str]) -> dict[str, Any]:
    """Wait (generously) until the job's Daestro state is one of ``states``; the job."""

    def reached() -> dict[str, Any] | None:
        job = daestro_job(server, job_id)
        return job if job["state"] in states else None

    return dict(wait_for(reached, timeout=90))


def native(server: LiveServer, project: str, job_id: str, what: str = "") -> httpx.Response:
    response = server.http.get(f"/v1/projects/{project}/jobs/{job_id}{what}")
    assert response.status_code == 200, response.text
    return response


def assert_daestro_error(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    answer = response.json()
    assert set(answer) == {"ok", "message"} and answer["ok"] is False, answer
    assert isinstance(answer["message"], str) and answer["message"], answer
    for word in words:
        assert word in answer["message"], answer


def test_the_seed_curl_body_runs_with_its_parameter(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    setup_project(server, "my-project", "first-job-queue")
    response = post_raw(server, SEED_CURL_BODY)
    assert response.status_code == 202, response.text
    assert response.json()["ok"] is True
    job_id = response.json()["data"]["id"]

    done = wait_state(server, job_id, {"completed", "failed", "error", "cancelled"})
    assert done["state"] == "completed" and done["system_note"] is None
    assert done["id"] == job_id and done["schedule_at"] is None
    stored = native(server, "my-project", job_id).json()
    assert stored["command"] == ["uname", "-a"]
    assert stored["env"]["file"] == "https://example.com/paint.jpg"
    assert stored["secret_env"] == {"access_token": "***"}
    # `uname -a` printed the kernel's name; the log we store has it.
    assert "Linux" in native(server, "my-project", job_id, "/logs").text
    for text in (
        response.text,
        json.dumps(done),
        json.dumps(stored),
        native(server, "my-project", job_id, "/events").text,
    ):
        assert "sensitive-vars-will-be-encrypted" not in text


def test_the_seed_example_body(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    setup_project(server, "project-code", "your-job-queue")
    # As written, the example's `// or unix timestamp` comment is not JSON: Daestro's error shape
    # says where the body is wrong.
    as_written = post_raw(server, SEED_EXAMPLE_BODY)
    assert_daestro_error(as_written, 400, "body", "JSON")

    # Without the comment it runs: its schedule_at is in the past, so at once.
    response = post_raw(server, SEED_EXAMPLE_BODY.replace(" // or unix timestamp", ""))
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["id"]
    done = wait_state(server, job_id, {"completed", "failed", "error", "cancelled"})
    assert done["state"] == "completed", done
    assert done["schedule_at"] == "2025-05-17T06:37:00Z"
    assert native(server, "project-code", job_id).json()["command"] == ["uname", "-a"]
    assert "Linux" in native(server, "project-code", job_id, "/logs").text


def test_a_future_schedule_at_is_submitted_then_runs(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server()
    setup_project(server, "my-project", "first-job-queue", command=["true"])
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    common = {
        "job_definition": "my-project::hello-world:1",
        "job_queue": "my-project::first-job-queue",
    }
    by_seconds = submit(server, **common, schedule_at=int(at.timestamp()))
    by_iso = submit(server, **common, schedule_at=at.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    for job_id in (by_seconds, by_iso):
        job = daestro_job(server, job_id)
        assert job["state"] == "submitted", job
        assert job["schedule_at"] == at.strftime("%Y-%m-%dT%H:%M:%SZ")
    for job_id in (by_seconds, by_iso):
        assert wait_state(server, job_id, {"completed", "failed", "error"})["state"] == "completed"
        started = native(server, "my-project", job_id).json()["start_time"]
        assert datetime.fromisoformat(started) >= at


def test_daestro_variables_are_in_the_environment(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    setup_project(server, "my-project", "first-job-queue")
    job_id = submit(
        server,
        job_definition="my-project::hello-world:1",
        job_queue="my-project::first-job-queue",
        name="env-check",
        container_cmd=["sh", "-c", 'echo "id=$DAESTRO_JOB_ID queue=$DAESTRO_JOB_QUEUE_NAME"'],
    )
    done = wait_state(server, job_id, {"completed", "failed", "error"})
    assert done["state"] == "completed" and done["name"] == "env-check"
    logs = native(server, "my-project", job_id, "/logs").text
    assert f"id={job_id} queue=first-job-queue" in logs


def test_sensitive_values_are_write_only(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    setup_project(server, "my-project", "first-job-queue")
    job_id = submit(
        server,
        job_definition="my-project::hello-world",
        job_queue="my-project::first-job-queue",
        container_cmd=["sh", "-c", 'echo "token=$access_token file=$file"; exit 1'],
        container_env={
            "access_token": {"value": SECRET, "sensitive": True},
            "file": {"value": "plain.jpg", "sensitive": False},
        },
    )
    done = wait_state(server, job_id, {"completed", "failed", "error"})
    assert (
        done["state"] == "failed"
        and done["system_note"] == "exit_code: the container exited with code 1"
    )
    logs = native(server, "my-project", job_id, "/logs").text
    assert "token=*** file=plain.jpg" in logs
    cancel = server.http.post(f"/v1/client/job/{job_id}/cancel")
    for text in (
        logs,
        json.dumps(done),
        cancel.text,
        native(server, "my-project", job_id).text,
        native(server, "my-project", job_id, "/events").text,
        server.http.get("/v1/projects/my-project/jobs").text,
    ):
        assert SECRET not in text


def test_running_cancelling_cancelled(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    # PID 1 ignores SIGTERM without a handler: the stop waits out the grace period (2 s).
    setup_project(server, "my-project", "first-job-queue", command=["sleep", "60"])
    job_id = submit(
        server, job_definition="my-project::hello-world:1", job_queue="my-project::first-job-queue"
    )
    assert daestro_job(server, job_id)["state"] in {"runnable", "starting", "running"}
    wait_state(server, job_id, {"running"})
    response = server.http.post(f"/v1/client/job/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["ok"] is True
    # The cancel is asked of the runner; until the container is gone the job is cancelling.
    assert response.json()["data"]["state"] == "cancelling"
    assert wait_state(server, job_id, {"cancelled", "failed", "completed"})["state"] == "cancelled"
    again = server.http.post(f"/v1/client/job/{job_id}/cancel")
    assert_daestro_error(again, 400, "already cancelled")


def test_a_waiting_job_is_cancelled_at_once(make_server: Callable[..., LiveServer]) -> None:
    server = make_server()
    setup_project(server, "my-project", "first-job-queue", command=["true"])
    job_id = submit(
        server,
        job_definition="my-project::hello-world:1",
        job_queue="my-project::first-job-queue",
        schedule_at=int((datetime.now(UTC) + timedelta(hours=1)).timestamp()),
    )
    response = server.http.post(f"/v1/client/job/{job_id}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["state"] == "cancelled"
    assert daestro_job(server, job_id)["state"] == "cancelled"


def test_failed_timeout_and_error_states(make_server: Callable[..., LiveServer]) -> None:
    # The missing image's registry is on loopback, which the policy refuses unless allowed.
    server = make_server(policy_allow_local_registries=True)
    setup_project(server, "my-project", "first-job-queue")
    server.register(
        {"name": "slow", "image": TEST_IMAGE, "command": ["sleep", "60"], "timeout": 1},
        project="my-project",
    )
    # No registry answers on port 1: the image cannot be had, the container never starts.
    server.register(
        {"name": "missing", "image": "127.0.0.1:1/no-such-image:1", "command": ["true"]},
        project="my-project",
    )
    queue = "my-project::first-job-queue"
    failed = submit(
        server,
        job_definition="my-project::hello-world:1",
        job_queue=queue,
        container_cmd=["sh", "-c", "exit Param::code"],
        container_cmd_parameter={"code": 3},
    )
    timed_out = submit(server, job_definition="my-project::slow:1", job_queue=queue)
    not_started = submit(server, job_definition="my-project::missing:1", job_queue=queue)
    ends = {"completed", "failed", "timeout", "error", "cancelled"}

    job = wait_state(server, failed, ends)
    assert (job["state"], job["system_note"]) == (
        "failed",
        "exit_code: the container exited with code 3",
    )
    job = wait_state(server, timed_out, ends)
    assert (job["state"], job["system_note"]) == ("timeout", "timed_out: timed out after 1s")
    job = wait_state(server, not_started, ends)
    assert job["state"] == "error" and job["system_note"].startswith("image_missing: "), job


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server without a runner, with my-project's queue and definition: the error cases."""
    server = make_server(runner_enabled=False)
    setup_project(server, "my-project", "first-job-queue")
    return server


def test_bad_requests_get_a_400_in_daestros_shape(server: LiveServer) -> None:
    good = json.loads(SEED_CURL_BODY)
    cases: list[tuple[Any, tuple[str, ...]]] = [
        ("{not json", ("body", "JSON")),
        ({k: v for k, v in good.items() if k != "job_definition"}, ("job_definition", "required")),
        ({**good, "job_definition": "my-project/hello-world:1"}, ("job_definition", "::")),
        ({**good, "job_definition": "hello-world:1"}, ("job_definition",)),
        ({**good, "job_definition": "my-project::hello-world:v1"}, ("job_definition",)),
        ({**good, "job_queue": "first-job-queue"}, ("job_queue",)),
        ({**good, "container_cmd": ["echo", "Param::nope"]}, ("container_cmd", "nope")),
        ({**good, "job_queue": "other::first-job-queue"}, ("job_queue", "other", "my-project")),
        ({**good, "container_env": {"x": {"value": "1", "extra": 1}}}, ("container_env.x",)),
        ({**good, "container_env": {"DAESTRO_JOB_ID": {"value": "1"}}}, ("DAESTRO_JOB_ID",)),
        ({**good, "container_env": {"ORCH_X": {"value": "1"}}}, ("container_env.ORCH_X",)),
        ({**good, "schedule_at": True}, ("schedule_at",)),
        ({**good, "schedule_at": "tomorrow"}, ("schedule_at",)),
        ({**good, "colour": "blue"}, ("colour", "unknown field")),
        # A value pasted where a name goes is not echoed.
        ({**good, "container_env": {"TOKEN=s3cr3t": {"value": "1"}}}, ("container_env", "name")),
    ]
    for body, words in cases:
        text = body if isinstance(body, str) else json.dumps(body)
        response = post_raw(server, text)
        assert_daestro_error(response, 400, *words)
        assert "s3cr3t" not in response.text

    named = {**good, "name": "once"}
    assert post_raw(server, json.dumps(named)).status_code == 202
    assert_daestro_error(post_raw(server, json.dumps(named)), 400, "name", "once")


def test_a_sensitive_value_too_short_to_mask_is_refused(server: LiveServer) -> None:
    good = json.loads(SEED_CURL_BODY)

    def with_token(value: str) -> str:
        env = {**good["container_env"], "access_token": {"value": value, "sensitive": True}}
        return json.dumps({**good, "container_env": env})

    for value in ("x", "é✓", "ñ§¤"):  # 1 to 3 characters: masking them would show them
        response = post_raw(server, with_token(value))
        assert_daestro_error(response, 400, "container_env.access_token", "at least 4 characters")
        assert response.json()["message"].startswith("container_env.access_token: ")
    assert post_raw(server, with_token("ñ§¤x")).status_code == 202
    # A plain (not sensitive) value is not masked: any length will do.
    plain = {**good["container_env"], "access_token": {"value": "x"}}
    assert post_raw(server, json.dumps({**good, "container_env": plain})).status_code == 202


def test_not_found_and_auth_errors_in_daestros_shape(server: LiveServer) -> None:
    good = json.loads(SEED_CURL_BODY)
    missing = [
        ({**good, "job_definition": "my-project::nope:1"}, "job_definition"),
        ({**good, "job_definition": "my-project::hello-world:7"}, "job_definition"),
        ({**good, "job_queue": "my-project::nope"}, "job_queue"),
        (
            {**good, "job_definition": "nope::hello-world:1", "job_queue": "nope::first-job-queue"},
            "project 'nope'",
        ),
    ]
    for body, word in missing:
        assert_daestro_error(post_raw(server, json.dumps(body)), 404, word)
    assert_daestro_error(server.http.get("/v1/client/job/no-such-id"), 404, "no-such-id")
    assert_daestro_error(server.http.post("/v1/client/job/no-such-id/cancel"), 404, "no-such-id")

    anonymous = server.anonymous.post(f"{server.url}/v1/client/job", json=good, timeout=30)
    assert_daestro_error(anonymous, 401, "token")
    assert anonymous.headers["www-authenticate"] == "Bearer"
    assert_daestro_error(post_raw(server, SEED_CURL_BODY, token="not-a-token"), 401, "token")
    job_id = post_raw(server, SEED_CURL_BODY).json()["data"]["id"]
    unknown = server.anonymous.get(
        f"{server.url}/v1/client/job/{job_id}", headers=bearer("nope"), timeout=30
    )
    assert_daestro_error(unknown, 401, "token")

    # A token of another project sees neither the project nor its jobs; a read-only token of
    # the project reads but may not submit or cancel.
    server.http.post("/v1/projects", json={"name": "other"}).raise_for_status()
    tokens = {}
    for name, role, project in (("outsider", "write", "other"), ("reader", "read", "my-project")):
        made = server.http.post("/v1/tokens", json={"name": name, "role": role, "project": project})
        assert made.status_code == 201, made.text
        tokens[name] = made.json()["token"]
    outsider = httpx.Client(base_url=server.url, headers=bearer(tokens["outsider"]), timeout=30)
    reader = httpx.Client(base_url=server.url, headers=bearer(tokens["reader"]), timeout=30)
    with outsider, reader:
        assert_daestro_error(outsider.post("/v1/client/job", json=good), 404, "my-project")
        assert_daestro_error(outsider.get(f"/v1/client/job/{job_id}"), 404, job_id)
        assert_daestro_error(outsider.post(f"/v1/client/job/{job_id}/cancel"), 404, job_id)
        assert reader.get(f"/v1/client/job/{job_id}").json()["data"]["state"] == "runnable"
        assert_daestro_error(reader.post("/v1/client/job", json=good), 403, "read-only")
        assert_daestro_error(reader.post(f"/v1/client/job/{job_id}/cancel"), 403, "read-only")
