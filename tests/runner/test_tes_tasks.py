"""TES tasks run by a live server's runner on the real engine (SQLite and PostgreSQL), driven
by the real ``py-tes`` client and plain HTTP: two executors sharing a volume, a failing
executor, a missing image, a cancel while an executor runs, outputs delivered, the task seen as
a job of the native API, inputs and outputs in an S3 store, and a runner restart in the middle
of a task."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import tes

from tests.conftest import (
    DATABASES,
    TEST_IMAGE,
    LiveServer,
    S3Server,
    admin_token,
    bearer,
    module_server,
    wait_for,
)
from tests.hosts import RunnerProcess

TES = "/ga4gh/tes/v1"
LOCAL_ENGINE = "unix:///var/run/docker.sock"
ENDED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    s3_server: S3Server,
) -> Iterator[LiveServer]:
    """One server with a runner per database, which may use one S3 bucket of its own; each
    test works in a project of its own."""
    root = tmp_path_factory.mktemp(f"tes-run-{request.param}")
    with module_server(
        request.param,
        root,
        docker_client,
        runner_capacity=4,
        tes_output_root=str(root / "outputs"),
        tes_s3_buckets=s3_server.new_bucket(),
        tes_s3_endpoint_url=s3_server.endpoint_url,
    ) as live:
        yield live


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """A TES client of a new project, with a write token bound to it."""
    name = f"r{uuid.uuid4().hex[:10]}"
    server.http.post("/v1/projects", json={"name": name}).raise_for_status()
    body = {"name": "tes", "role": "write", "project": name}
    token = server.http.post("/v1/tokens", json=body).json()["token"]
    with httpx.Client(base_url=server.url + TES, headers=bearer(token), timeout=30) as tes_client:
        tes_client.headers["x-project"] = name
        tes_client.headers["x-token"] = token
        yield tes_client


def output_root(server: LiveServer, client: httpx.Client) -> Path:
    """The client's project's own folder of the output root."""
    return Path(server.settings.resolved_tes_output_root()) / client.headers["x-project"]


def submit(client: httpx.Client, **body: Any) -> str:
    response = client.post("/tasks", json=body)
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


def ended(client: httpx.Client, task_id: str, timeout: float = 60) -> dict[str, Any]:
    """The task in the FULL view once it ended."""

    def full() -> dict[str, Any] | None:
        task = client.get(f"/tasks/{task_id}", params={"view": "FULL"}).json()
        return task if task["state"] in ENDED else None

    return wait_for(full, timeout=timeout)


def executor(*command: str, **more: Any) -> dict[str, Any]:
    return {"image": TEST_IMAGE, "command": list(command), **more}


def containers_of(docker_client: docker.DockerClient, task_id: str) -> list[Any]:
    label = f"orchestrator.job-id={task_id}"
    return list(docker_client.containers.list(all=True, filters={"label": label}))


def test_two_executors_share_a_volume_and_the_output_is_delivered(
    server: LiveServer, client: httpx.Client, docker_client: docker.DockerClient
) -> None:
    destination = output_root(server, client) / uuid.uuid4().hex / "result.txt"
    task_id = submit(
        client,
        name="pipeline",
        volumes=["/shared"],
        inputs=[{"path": "/inputs/greeting.txt", "content": "hello from content"}],
        outputs=[{"path": "/shared/result.txt", "url": destination.as_uri()}],
        executors=[
            executor("sh", "-c", "cat /inputs/greeting.txt > /shared/result.txt; echo first"),
            executor("sh", "-c", "cat /shared/result.txt; echo oops >&2", workdir="/shared"),
        ],
    )
    task = ended(client, task_id)
    assert task["state"] == "COMPLETE", task
    [log] = task["logs"]
    first, second = log["logs"]
    assert (first["exit_code"], first["stdout"]) == (0, "first\n")
    assert (second["exit_code"], second["stdout"], second["stderr"]) == (
        0,
        "hello from content",
        "oops\n",
    )
    assert log["start_time"] <= first["start_time"] <= second["end_time"] <= log["end_time"]
    assert destination.read_text() == "hello from content"
    assert log["outputs"] == [
        {"url": destination.as_uri(), "path": "/shared/result.txt", "size_bytes": "18"}
    ]
    # The task is a job of the native API: the same id, succeeded, its containers gone.
    project = client.headers["x-project"]
    native = server.http.get(f"/v1/projects/{project}/jobs/{task_id}")
    assert native.status_code == 200 and native.json()["status"] == "succeeded"
    # Its log holds each executor's output, marked by stream.
    lines = server.http.get(
        f"/v1/projects/{project}/jobs/{task_id}/logs", params={"format": "json"}
    ).text.splitlines()
    shown = [(line["stream"], line["text"]) for line in map(json.loads, lines)]
    assert shown == [
        (None, "[executor 0 stdout]\n"),
        ("stdout", "first\n"),
        (None, "[executor 1 stdout]\n"),
        ("stdout", "hello from content"),
        (None, "[executor 1 stderr]\n"),
        ("stderr", "oops\n"),
    ]
    assert wait_for(lambda: containers_of(docker_client, task_id) == [] or None)


def test_a_failing_executor_stops_the_task_unless_it_may_fail(client: httpx.Client) -> None:
    task_id = submit(
        client,
        executors=[
            executor("sh", "-c", "exit 3", ignore_error=True),
            executor("sh", "-c", "echo second; exit 2"),
            executor("echo", "never"),
        ],
    )
    task = ended(client, task_id)
    assert task["state"] == "EXECUTOR_ERROR"
    codes = [entry["exit_code"] for entry in task["logs"][0]["logs"]]
    assert codes == [3, 2]


def test_a_missing_image_is_a_system_error_naming_it(
    server: LiveServer, client: httpx.Client
) -> None:
    image = f"orch-test-missing-{uuid.uuid4().hex[:8]}:1"
    task_id = submit(client, executors=[{"image": image, "command": ["true"]}])
    task = ended(client, task_id)
    assert task["state"] == "SYSTEM_ERROR"
    assert any(image in line for line in task["logs"][0]["system_logs"]), task
    native = server.http.get(f"/v1/projects/{client.headers['x-project']}/jobs/{task_id}").json()
    assert (native["status"], native["reason"]) == ("failed", "image_missing")


def test_cancel_stops_the_running_executor_and_removes_it(
    server: LiveServer, client: httpx.Client, docker_client: docker.DockerClient
) -> None:
    task_id = submit(client, executors=[executor("sleep", "300"), executor("echo", "never")])
    wait_for(
        lambda: client.get(f"/tasks/{task_id}").json()["state"] == "RUNNING" or None, timeout=60
    )
    [running] = wait_for(lambda: containers_of(docker_client, task_id) or None)
    # The server's default limits hold for an executor as for a job's container.
    host = running.attrs["HostConfig"]
    assert (host["PidsLimit"], host["Memory"]) == (
        server.settings.default_pids,
        server.settings.default_memory,
    )
    response = client.post(f"/tasks/{task_id}:cancel")
    assert response.status_code == 200, response.text
    task = ended(client, task_id)
    assert task["state"] == "CANCELED"
    assert len(task["logs"][0]["logs"]) == 1
    assert wait_for(lambda: containers_of(docker_client, task_id) == [] or None)


def test_py_tes_runs_a_task_whose_second_executor_reads_the_first_ones_output(
    server: LiveServer, client: httpx.Client
) -> None:
    py_tes = tes.HTTPClient(server.url, user="any", password=client.headers["x-token"])
    task_id = py_tes.create_task(
        tes.Task(
            name="py-tes-pipeline",
            volumes=["/data"],
            executors=[
                tes.Executor(image=TEST_IMAGE, command=["sh", "-c", "echo 21 > /data/n"]),
                tes.Executor(
                    image=TEST_IMAGE,
                    command=["sh", "-c", "echo $(( $(cat /data/n) * 2 ))"],
                    stdout="/data/answer",
                ),
            ],
        )
    )
    task = py_tes.wait(task_id, timeout=60)
    assert task.state == "COMPLETE"
    full = py_tes.get_task(task_id, view="FULL")
    assert full.logs[0].logs[1].stdout == "42\n"


def test_a_runner_killed_mid_task_leaves_no_executor_and_the_task_runs_again(
    make_server: Callable[..., LiveServer],
    runner_processes: Callable[..., RunnerProcess],
    docker_client: docker.DockerClient,
) -> None:
    api = make_server(runner_enabled=False)
    token = admin_token(api.settings)
    with httpx.Client(base_url=api.url + TES, headers=bearer(token), timeout=30) as admin:
        task_id = submit(admin, executors=[executor("sh", "-c", "sleep 3; echo done")])
        runner = runner_processes(
            docker_host=LOCAL_ENGINE,
            name=f"tes-{uuid.uuid4().hex[:8]}",
            database_url=str(api.settings.database_url),
            data_dir=api.settings.data_dir,
            env={"ORCH_POLL_INTERVAL": "0.2"},
        )
        [first] = wait_for(lambda: containers_of(docker_client, task_id) or None, timeout=60)
        runner.kill9()
        runner.restart()
        task = ended(admin, task_id, timeout=90)
    assert task["state"] == "COMPLETE", task
    # The killed runner's executor was removed, never adopted; the task ran again to its end.
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(first.id)
    assert [log["logs"][-1].get("exit_code") for log in task["logs"]][-1] == 0
    assert task["logs"][-1]["logs"][-1]["stdout"] == "done\n"


def test_the_readmes_py_tes_example_runs_as_written(
    server: LiveServer, client: httpx.Client
) -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    [example] = [
        block
        for block in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
        if "import tes" in block
    ]
    code = example.replace("http://127.0.0.1:8000", server.url)
    env = {**os.environ, "ORCH_TOKEN": client.headers["x-token"]}
    ran = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=180
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.split() == ["COMPLETE", "hello"]


def test_py_tes_cancels_a_running_task(
    server: LiveServer, client: httpx.Client, docker_client: docker.DockerClient
) -> None:
    py_tes = tes.HTTPClient(server.url, user="any", password=client.headers["x-token"])
    task_id = py_tes.create_task(
        tes.Task(executors=[tes.Executor(image=TEST_IMAGE, command=["sleep", "300"])])
    )
    wait_for(lambda: py_tes.get_task(task_id).state == "RUNNING" or None, timeout=60)
    py_tes.cancel_task(task_id)
    # CANCELING while its container stops (py-tes's wait() returns at it), then CANCELED.
    assert py_tes.get_task(task_id).state in {"CANCELING", "CANCELED"}
    wait_for(lambda: py_tes.get_task(task_id).state == "CANCELED" or None, timeout=60)
    assert wait_for(lambda: containers_of(docker_client, task_id) == [] or None)


def test_a_task_cannot_write_in_another_projects_output_folder(
    server: LiveServer, client: httpx.Client
) -> None:
    other = Path(server.settings.resolved_tes_output_root()) / "someone-else" / "result.txt"
    task_id = submit(
        client,
        volumes=["/out"],
        outputs=[{"path": "/out/result.txt", "url": other.as_uri()}],
        executors=[executor("sh", "-c", "echo mine > /out/result.txt")],
    )
    task = ended(client, task_id)
    assert task["state"] == "SYSTEM_ERROR"
    assert not other.exists()
    assert task["logs"][0]["outputs"] == []
    # The job says why: its executors ran, its output could not go where it asked.
    job = server.http.get(f"/v1/projects/{client.headers['x-project']}/jobs/{task_id}").json()
    assert job["reason"] == "output_invalid"


def test_py_tes_runs_a_task_whose_input_and_output_are_s3_objects(
    server: LiveServer, client: httpx.Client, s3_server: S3Server
) -> None:
    [bucket] = server.settings.tes_s3_buckets
    run = uuid.uuid4().hex
    s3_server.client.put_object(Bucket=bucket, Key=f"{run}/reads.txt", Body=b"ACGT\nTTGA\n")
    py_tes = tes.HTTPClient(server.url, user="py-tes", password=client.headers["x-token"])
    task_id = py_tes.create_task(
        tes.Task(
            name="count",
            inputs=[tes.Input(url=f"s3://{bucket}/{run}/reads.txt", path="/in/reads.txt")],
            outputs=[tes.Output(url=f"s3://{bucket}/{run}/count.txt", path="/out/count.txt")],
            executors=[
                tes.Executor(
                    image=TEST_IMAGE,
                    command=["sh", "-c", "wc -l < /in/reads.txt > /out/count.txt"],
                )
            ],
        )
    )
    py_tes.wait(task_id, timeout=60)
    task = py_tes.get_task(task_id, view="FULL")

    assert task.state == "COMPLETE", task.logs
    [written] = task.logs[0].outputs
    assert (written.url, written.path, written.size_bytes) == (
        f"s3://{bucket}/{run}/count.txt",
        "/out/count.txt",
        2,
    )
    body = s3_server.client.get_object(Bucket=bucket, Key=f"{run}/count.txt")["Body"].read()
    assert body.strip() == b"2"
