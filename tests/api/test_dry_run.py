"""``POST .../jobs?dry_run=true``: every check of a submit, the same errors, and the container the
job's first attempt would run (built by the runner's own code, compared here with the container
a real submit makes), with nothing stored and nothing started. On a live server, SQLite and
PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import docker
import httpx
import sqlalchemy as sa

from tests.conftest import TEST_IMAGE, LiveServer, containers_of, installation_of, wait_for

JOBS = "/v1/projects/default/jobs"
SECRET = "s3cr3t-dry-run-value"
# Tables a submit writes to (a job, its events, its webhook, an audit row), and the schedule
# tables a dry run must leave alone as well.
TABLES = ("jobs", "job_events", "audit_events", "webhook_deliveries", "schedules")
WAITER = {
    "name": "waiter",
    "image": TEST_IMAGE,
    # Waits (for a cancel) so the real container can be inspected while it runs.
    "command": ["sh", "-c", "echo Param::greeting $MODE; sleep Param::seconds"],
    "parameters": {"greeting": "hello", "seconds": 300},
    "env": {"MODE": "plain"},
    "secrets": ["API_TOKEN"],
    "resources": {"cpus": 0.5, "memory": "64Mi", "pids": 64},
    "working_dir": "/tmp",
    "user": "65534",
    "labels": {"team": "render"},
    "volumes": ["cache:/cache"],
}


def counts(server: LiveServer) -> dict[str, int]:
    with server.services.db.read() as session:
        return {
            table: session.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in TABLES
        }


def dry_run(server: LiveServer, **body: Any) -> httpx.Response:
    return server.http.post(JOBS, params={"dry_run": "true"}, json=body)


def test_a_dry_run_shows_the_container_that_a_submit_then_runs(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient
) -> None:
    server = make_server()
    server.register(WAITER)
    installation = installation_of(server.settings)
    body = {
        "definition": "waiter",
        "parameters": {"greeting": "dry"},
        "env": {"EXTRA": "given"},
        "secret_env": {"API_TOKEN": SECRET},
        "webhook": "http://127.0.0.1:9/hook",
    }
    before = counts(server)
    response = dry_run(server, **body)
    assert response.status_code == 200, response.text
    assert SECRET not in response.text
    shown = response.json()
    assert (shown["queue"], shown["definition"], shown["status"]) == (
        "default",
        "waiter:1",
        "queued",
    )
    assert shown["parameters"] == {"greeting": "dry", "seconds": 300}
    container = shown["container"]
    assert container["image"] == TEST_IMAGE
    assert container["command"] == ["sh", "-c", "echo dry $MODE; sleep 300"]
    assert container["env"]["API_TOKEN"] == "***"
    assert (container["env"]["MODE"], container["env"]["EXTRA"]) == ("plain", "given")
    assert container["env"]["ORCH_QUEUE"] == "default"
    assert container["resources"] == {
        "cpus": 0.5,
        "memory": 64 * 1024**2,
        "pids": 64,
        "shm_size": None,
        "gpus": None,
    }
    network = f"orch-{installation[:12]}-default"
    assert container["network"] == network
    assert container["volumes"] == [f"{network}.cache:/cache"]
    assert (container["user"], container["working_dir"]) == ("65534", "/tmp")
    assert container["labels"]["team"] == "render"
    assert container["labels"]["orchestrator.installation"] == installation
    # Nothing was stored, nothing was started.
    assert counts(server) == before
    label = f"orchestrator.installation={installation}"
    assert docker_client.containers.list(all=True, filters={"label": label}) == []

    # The same submission for real: its container is the one the dry run showed, but for the
    # values only a stored and claimed job has.
    job = server.submit(**body)
    server.wait_job(job["id"], {"running"})
    [real] = wait_for(lambda: containers_of(docker_client, job["id"]))
    config, host = real.attrs["Config"], real.attrs["HostConfig"]
    assert config["Image"] == container["image"] and config["Cmd"] == container["command"]
    env = dict(item.split("=", 1) for item in config["Env"] if "=" in item)
    per_job = {"ORCH_JOB_ID": job["id"], "API_TOKEN": SECRET}
    assert {name: env[name] for name in container["env"]} == {**container["env"], **per_job}
    labels = {name: config["Labels"][name] for name in container["labels"]}
    per_job = {
        "orchestrator.job-id": job["id"],
        "orchestrator.runner": server.settings.runner_name,
    }
    assert labels == {**container["labels"], **per_job}
    assert real.name == container["name"].replace("<job-id>", job["id"])
    assert (config["User"], config["WorkingDir"]) == (container["user"], container["working_dir"])
    assert container["network"] in real.attrs["NetworkSettings"]["Networks"]
    assert host["Memory"] == container["resources"]["memory"]
    assert host["PidsLimit"] == container["resources"]["pids"]
    assert host["NanoCpus"] == int(container["resources"]["cpus"] * 1e9)
    assert [m for m in host["Binds"] if m.endswith(":/cache")] == container["volumes"]
    server.http.post(f"{JOBS}/{job['id']}/cancel").raise_for_status()
    server.wait_job(job["id"])


def test_a_bad_dry_run_answers_as_the_submit_would_and_stores_nothing(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False, max_input_bytes=1024)
    server.register(WAITER)
    server.register({"name": "plain", "image": TEST_IMAGE, "command": ["echo", "Param::word"]})
    server.submit(definition="plain", name="taken", parameters={"word": "w"})
    good = {"definition": "waiter", "secret_env": {"API_TOKEN": SECRET}}
    cases = [
        # The secret the definition needs is missing.
        ({"definition": "waiter"}, 400, "secret_env.API_TOKEN"),
        ({**good, "parameters": {"nope": 1}}, 400, "parameters.nope"),
        ({"definition": "plain"}, 400, "parameters.word"),
        ({**good, "definition": "missing"}, 404, "definition"),
        ({**good, "definition": "waiter:2"}, 404, "definition"),
        ({**good, "queue": "missing"}, 404, "queue"),
        ({**good, "env": {"ORCH_JOB_ID": "x"}}, 400, "env.ORCH_JOB_ID"),
        ({**good, "input": "x" * 2048}, 413, "input"),
        ({**good, "webhook": "http://169.254.169.254/"}, 400, "webhook"),
        ({**good, "color": "blue"}, 400, "color"),
        ({"definition": "plain", "parameters": {"word": "w"}, "name": "taken"}, 409, "name"),
    ]
    before = counts(server)
    for body, status, field in cases:
        dry = dry_run(server, **body)
        assert (dry.status_code, dry.json().get("field")) == (status, field), (body, dry.text)
        assert SECRET not in dry.text
        real = server.http.post(JOBS, json=body)
        assert (real.status_code, real.json()) == (dry.status_code, dry.json()), body
    assert counts(server) == before
    assert dry_run(server, **good).status_code == 200
    assert counts(server) == before


def test_a_misspelt_dry_run_is_refused_not_submitted(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    server.register({"name": "plain", "image": TEST_IMAGE, "command": ["true"]})
    before = counts(server)
    response = server.http.post(JOBS, params={"dryrun": "true"}, json={"definition": "plain"})
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "dryrun" and "dry_run" in response.json()["message"]
    response = server.http.post(JOBS, params={"dry_run": "maybe"}, json={"definition": "plain"})
    assert (response.status_code, response.json()["field"]) == (400, "dry_run")
    assert counts(server) == before


def test_a_dry_run_needs_the_right_to_submit(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    server.register({"name": "plain", "image": TEST_IMAGE, "command": ["true"]})
    made = server.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    assert made.status_code == 201, made.text
    reader = {"Authorization": f"Bearer {made.json()['token']}"}
    response = server.http.post(
        JOBS, params={"dry_run": "true"}, json={"definition": "plain"}, headers=reader
    )
    assert response.status_code == 403, response.text
