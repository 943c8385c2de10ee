"""What the runner reports of a TES task's attempts, recorded through the service functions the
runner glue calls, as the FULL (and BASIC) view shows it over HTTP; the TES state of each job
status; and the native paths that read a TES task's job (job get, resubmit, retention). On a
server without a runner, on SQLite and PostgreSQL: the job's status is moved with the jobs
service, as the attempt machinery moves it."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import httpx
import pytest
from sqlmodel import select

from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.schemas.tes import ExecutorLogRecord, OutputFileRecord
from orchestrator.services import jobs, resubmit, retention, tes_tasks
from orchestrator.services.audit import SYSTEM
from orchestrator.storage.models import Job, TesAttemptLog, TesTask, TesTaskTag
from tests.conftest import CLIENT_TIMEOUT, DATABASES, LiveServer, admin_token, bearer, module_server

TES = "/ga4gh/tes/v1"
T0 = datetime(2026, 12, 3, 10, 0, 0, tzinfo=UTC)


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
) -> Iterator[LiveServer]:
    root = tmp_path_factory.mktemp(f"tes-logs-{request.param}")
    with module_server(request.param, root, docker_client, runner_enabled=False) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    token = admin_token(server.settings)
    with httpx.Client(base_url=server.url + TES, headers=bearer(token), timeout=30) as http:
        yield http


def create(client: httpx.Client, **changes: Any) -> str:
    body = {
        "name": "two",
        "executors": [
            {"image": "busybox:1.36", "command": ["sh", "-c", "echo a > /vol/a"]},
            {"image": "busybox:1.36", "command": ["cat", "/vol/a"]},
        ],
        "volumes": ["/vol"],
        "tags": {"k": "v"},
        **changes,
    }
    response = client.post("/tasks", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def move(server: LiveServer, task_id: str, status: JobStatus, **changes: Any) -> None:
    """Move the task's job as the attempt machinery does (``jobs.transition``)."""
    event = {
        JobStatus.STARTING: EventType.STARTING,
        JobStatus.RUNNING: EventType.STARTED,
        JobStatus.SUCCEEDED: EventType.SUCCEEDED,
        JobStatus.FAILED: EventType.FAILED,
        JobStatus.QUEUED: EventType.REQUEUED,
    }[status]
    with server.services.db.transaction() as session:
        job = jobs.locked_job(session, task_id)
        if status is JobStatus.STARTING:
            changes = {"attempt": job.attempt + 1, **changes}
        jobs.transition(session, job, status, event, **changes)


def shown(client: httpx.Client, task_id: str, view: str = "FULL") -> dict[str, Any]:
    response = client.get(f"/tasks/{task_id}", params={"view": view})
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_the_full_view_shows_what_the_runner_recorded(
    server: LiveServer, client: httpx.Client
) -> None:
    task_id = create(client)
    db = server.services.db
    move(server, task_id, JobStatus.STARTING)
    with db.transaction() as session:
        tes_tasks.attempt_started(session, task_id, 1, T0)
    assert shown(client, task_id)["state"] == "INITIALIZING"
    move(server, task_id, JobStatus.RUNNING)
    with db.transaction() as session:
        tes_tasks.executor_started(session, task_id, 1, 0, T0 + timedelta(seconds=1))
    running = shown(client, task_id)
    assert running["state"] == "RUNNING"
    # The running executor's log appears once it ended: the spec requires its exit code.
    assert running["logs"] == [
        {
            "logs": [],
            "metadata": {"attempt": "1"},
            "outputs": [],
            "start_time": "2026-12-03T10:00:00+00:00",
            "system_logs": [],
        }
    ]
    for index in (0, 1):
        start = T0 + timedelta(seconds=1 + 2 * index)
        with db.transaction() as session:
            if index:
                tes_tasks.executor_started(session, task_id, 1, index, start)
            record = ExecutorLogRecord(
                index=index,
                start_time=start,
                end_time=start + timedelta(seconds=1),
                exit_code=0,
                stdout="" if index == 0 else "a\n",
                stderr="warn\n" if index == 0 else "",
            )
            tes_tasks.executor_ended(session, task_id, 1, record)
    outputs = [OutputFileRecord(url="file:///out/a", path="/vol/a", size_bytes=2)]
    with db.transaction() as session:
        tes_tasks.attempt_ended(session, task_id, 1, T0 + timedelta(seconds=9), outputs, ["ok"])
    move(server, task_id, JobStatus.SUCCEEDED, exit_code=0)

    full = shown(client, task_id)

    assert full["state"] == "COMPLETE"
    assert full["logs"] == [
        {
            "logs": [
                {
                    "start_time": "2026-12-03T10:00:01+00:00",
                    "end_time": "2026-12-03T10:00:02+00:00",
                    "exit_code": 0,
                    "stdout": "",
                    "stderr": "warn\n",
                },
                {
                    "start_time": "2026-12-03T10:00:03+00:00",
                    "end_time": "2026-12-03T10:00:04+00:00",
                    "exit_code": 0,
                    "stdout": "a\n",
                    "stderr": "",
                },
            ],
            "metadata": {"attempt": "1"},
            "outputs": [{"url": "file:///out/a", "path": "/vol/a", "size_bytes": "2"}],
            "start_time": "2026-12-03T10:00:00+00:00",
            "end_time": "2026-12-03T10:00:09+00:00",
            "system_logs": ["ok"],
        }
    ]
    basic = shown(client, task_id, "BASIC")["logs"][0]
    assert "system_logs" not in basic
    assert [set(entry) for entry in basic["logs"]] == [{"start_time", "end_time", "exit_code"}] * 2
    listed = client.get("/tasks", params={"view": "FULL", "name_prefix": "two"}).json()
    assert next(t for t in listed["tasks"] if t["id"] == task_id)["logs"] == full["logs"]
    assert client.get("/tasks", params={"state": "COMPLETE"}).json()["tasks"][0]["id"] == task_id


def test_an_executor_without_an_exit_code_is_not_shown(
    server: LiveServer, client: httpx.Client
) -> None:
    """The spec's executor log requires ``exit_code``: one the engine lost is left out."""
    task_id = create(client)
    record = ExecutorLogRecord(0, T0, None, None, "", "")
    with server.services.db.transaction() as session:
        tes_tasks.executor_ended(session, task_id, 1, record)

    assert shown(client, task_id)["logs"][0]["logs"] == []
    with server.services.db.transaction() as session, pytest.raises(Exception, match="not found"):
        tes_tasks.attempt_started(session, "not-a-task", 1, T0)


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        (FailureReason.EXIT_CODE, "EXECUTOR_ERROR"),
        (FailureReason.IMAGE_MISSING, "SYSTEM_ERROR"),
        (FailureReason.RUNNER_LOST, "SYSTEM_ERROR"),
    ],
)
def test_a_failure_s_reason_gives_its_state(
    server: LiveServer, client: httpx.Client, reason: FailureReason, state: str
) -> None:
    task_id = create(client)
    move(server, task_id, JobStatus.STARTING)
    with server.services.db.transaction() as session:
        tes_tasks.attempt_started(session, task_id, 1, T0)
    move(server, task_id, JobStatus.FAILED, reason=reason, error="it broke")

    full = shown(client, task_id)

    assert full["state"] == state
    listed = client.get("/tasks", params={"state": state}).json()["tasks"]
    assert task_id in [item["id"] for item in listed]
    system_logs = full["logs"][0]["system_logs"]
    assert system_logs == ([] if state == "EXECUTOR_ERROR" else [f"{reason}: it broke"])


def test_cancel_of_a_running_task_is_canceling_until_it_stops(
    server: LiveServer, client: httpx.Client
) -> None:
    task_id = create(client)
    move(server, task_id, JobStatus.STARTING)
    move(server, task_id, JobStatus.RUNNING)

    assert client.post(f"/tasks/{task_id}:cancel").status_code == 200

    assert shown(client, task_id, "MINIMAL")["state"] == "CANCELING"
    canceling = client.get("/tasks", params={"state": "CANCELING"}).json()["tasks"]
    assert [item["id"] for item in canceling] == [task_id]
    with server.services.db.transaction() as session:
        job = jobs.locked_job(session, task_id)
        jobs.transition(session, job, JobStatus.CANCELLED, EventType.CANCELLED)
    assert shown(client, task_id, "MINIMAL")["state"] == "CANCELED"


def test_an_interrupted_attempt_is_queued_again_and_says_so(
    server: LiveServer, client: httpx.Client
) -> None:
    task_id = create(client)
    move(server, task_id, JobStatus.STARTING)
    with server.services.db.transaction() as session:
        tes_tasks.attempt_started(session, task_id, 1, T0)
    move(server, task_id, JobStatus.QUEUED, interrupted_attempts=1)

    full = shown(client, task_id)

    assert full["state"] == "QUEUED"
    assert full["logs"][0]["system_logs"] == []  # the job's attempt is still 1
    move(server, task_id, JobStatus.STARTING)
    with server.services.db.transaction() as session:
        tes_tasks.attempt_started(session, task_id, 2, T0 + timedelta(minutes=1))
    logs = shown(client, task_id)["logs"]
    assert [entry["metadata"]["attempt"] for entry in logs] == ["1", "2"]
    assert "interrupted" in logs[0]["system_logs"][0]


def test_native_paths_read_a_task_s_job(server: LiveServer, client: httpx.Client) -> None:
    task_id = create(client)
    job = server.job(task_id)
    assert (job["definition"], job["queue"], job["status"]) == ("tes:0", "tes", "queued")
    listed = server.http.get("/v1/projects/default/jobs", params={"definition": "tes"}).json()
    assert task_id in [item["id"] for item in listed["items"]]
    with httpx.Client(base_url=server.url, timeout=CLIENT_TIMEOUT) as browser:
        browser.cookies.set("orch_session", admin_token(server.settings))
        for path in (f"/ui/projects/default/jobs/{task_id}", "/ui/jobs"):
            page = browser.get(path)
            assert page.status_code == 200 and "tes:0" in page.text, path

    services = server.services
    with services.db.transaction() as session:
        again = resubmit.resubmit(
            session,
            services.box,
            services.hub,
            "default",
            task_id,
            policy=services.policy,
            limits=services.limits,
            tes_storage=services.settings.tes_storage(),
            actor=SYSTEM,
        )
        again_id = again.id
    copy = shown(client, again_id, "BASIC")
    original = shown(client, task_id, "BASIC")
    assert copy["state"] == "QUEUED"
    for key in ("name", "executors", "volumes", "tags"):
        assert copy[key] == original[key]

    client.post(f"/tasks/{again_id}:cancel").raise_for_status()
    with services.db.transaction() as session:
        tes_tasks.attempt_started(session, again_id, 1, T0)
        removed = retention.delete_jobs(session, [again_id])
    assert removed.jobs == 1
    with services.db.read() as session:
        for model in (TesTask, TesTaskTag, TesAttemptLog, Job):
            column = model.job_id if model is not Job else Job.id  # type: ignore[attr-defined]
            assert session.exec(select(model).where(column == again_id)).first() is None
    assert client.get(f"/tasks/{again_id}").status_code == 404
