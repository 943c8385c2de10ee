"""Resource ceilings on a live server: a definition or a job that asks for more memory, CPUs,
processes or time than the policy allows is a 403 naming the option and the setting
(``ORCH_POLICY_MAX_*``, set as a variable or in the policy file), at registration, at submit and
in the runner, and through the drop-in APIs in their own error shapes; at a ceiling, the job
runs in a real container with the limits it asked for."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from pydantic import ValidationError

from orchestrator.cli.output import setting_errors
from orchestrator.config import Settings
from orchestrator.rules.policy import setting_name
from orchestrator.rules.resource_ceilings import host_memory

from ..conftest import TEST_IMAGE, LiveServer, admin_token, containers_of

DEFINITIONS = "/v1/projects/default/definitions"
JOBS = "/v1/projects/default/jobs"
MI = 1024**2


def spec(name: str, **fields: Any) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": ["sleep", "60"], **fields}


@dataclass(frozen=True)
class Ceiling:
    """A ceiling set lower than its default, and definition fields at it and over it."""

    setting: str  # the policy field
    value: str  # as the variable and the policy file give it
    field: str  # the field a refusal names
    at: dict[str, Any]
    over: dict[str, Any]

    def fields(self, values: dict[str, Any]) -> dict[str, Any]:
        """``at`` or ``over`` as a definition's fields."""
        return values if self.field == "timeout" else {"resources": values}


CEILINGS = [
    Ceiling("max_memory", "64Mi", "resources.memory", {"memory": "64Mi"}, {"memory": "65Mi"}),
    Ceiling("max_cpus", "0.5", "resources.cpus", {"cpus": 0.5}, {"cpus": 0.75}),
    Ceiling("max_pids", "50", "resources.pids", {"pids": 50}, {"pids": 51}),
    Ceiling("max_timeout", "1m", "timeout", {"timeout": "1m"}, {"timeout": "61s"}),
]


def assert_refused(
    response: httpx.Response, field: str, setting: str, shown: str | None = None
) -> None:
    """A 403 ``policy_refused`` naming ``field`` (in its message as ``shown``, if given) and
    the variable of ``setting``."""
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["code"] == "policy_refused"
    assert body["field"] == field
    assert body["message"].startswith(f"{shown or field}: ")
    assert "is more than the server's policy allows" in body["message"]
    assert f"set by {setting_name(setting)})" in body["message"]


def configure(
    form: str, ceilings: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, Any]:
    """Set ``ceilings`` as ``ORCH_POLICY_*`` variables or in a policy file; the server's
    keywords that go with it."""
    if form == "variable":
        for field, value in ceilings.items():
            monkeypatch.setenv(setting_name(field), value)
        return {}
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(yaml.safe_dump(ceilings))
    return {"policy_file": policy_file}


@pytest.fixture(autouse=True)
def _no_ceilings_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for ceiling in CEILINGS:
        monkeypatch.delenv(setting_name(ceiling.setting), raising=False)
    monkeypatch.delenv("ORCH_POLICY_FILE", raising=False)


def test_a_bad_ceiling_is_reported_under_its_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCH_POLICY_MAX_MEMORY", "lots")
    monkeypatch.setenv("ORCH_POLICY_MAX_CPUS", "0")
    monkeypatch.setenv("ORCH_POLICY_MAX_TIMEOUT", "0")
    with pytest.raises(ValidationError) as caught:
        Settings(data_dir=tmp_path)
    assert setting_errors(caught.value) == (
        "ORCH_POLICY_MAX_MEMORY: 'lots' is not a size such as 256Mi or 1G; "
        "ORCH_POLICY_MAX_CPUS: Input should be greater than 0; "
        "ORCH_POLICY_MAX_TIMEOUT: must be greater than zero"
    )


def test_a_petabyte_of_memory_is_refused_by_default(server: LiveServer) -> None:
    assert_refused(
        server.http.post(DEFINITIONS, json=spec("huge", resources={"memory": "1Pi"})),
        "resources.memory",
        "max_memory",
    )
    response = server.http.post(
        DEFINITIONS,
        content=f"name: huge\nimage: {TEST_IMAGE}\nresources:\n  memory: 1Pi\n",
        headers={"Content-Type": "application/yaml"},
    )
    assert_refused(response, "resources.memory", "max_memory")
    assert response.json()["message"].startswith("resources.memory: 1Pi is more than ")
    assert server.http.get(f"{DEFINITIONS}/huge").status_code == 404


def test_the_default_ceilings_are_this_hosts_size_a_pid_bound_and_a_week(
    server: LiveServer,
) -> None:
    cpus = os.cpu_count() or 1
    for fields, field, setting in (
        ({"resources": {"memory": host_memory() + 1}}, "resources.memory", "max_memory"),
        ({"resources": {"cpus": cpus + 0.5}}, "resources.cpus", "max_cpus"),
        ({"resources": {"pids": 32769}}, "resources.pids", "max_pids"),
        ({"timeout": "7d1s"}, "timeout", "max_timeout"),
    ):
        response = server.http.post(DEFINITIONS, json=spec("over", **fields))
        assert_refused(response, field, setting)
    at = {"memory": host_memory(), "cpus": cpus, "pids": 32768}
    assert server.http.post(DEFINITIONS, json=spec("at", resources=at, timeout="7d")).is_success
    # A job's own timeout is checked as its definition's is: directly and in a schedule.
    assert_refused(
        server.http.post(JOBS, json={"definition": "at", "timeout": "8d"}), "timeout", "max_timeout"
    )
    schedule = {
        "name": "weekly",
        "cron": "@weekly",
        "target": {"job": {"definition": "at", "timeout": "8d"}},
    }
    response = server.http.post("/v1/projects/default/schedules", json=schedule)
    assert_refused(response, "target.job.timeout", "max_timeout", shown="target.job: timeout")


@pytest.mark.parametrize("form", ["variable", "file"])
@pytest.mark.parametrize("ceiling", CEILINGS, ids=[c.setting for c in CEILINGS])
def test_over_a_configured_ceiling_is_refused_at_registration_and_at_submit(
    ceiling: Ceiling,
    form: str,
    make_server: Callable[..., LiveServer],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    # Registered while the default ceilings held: submit checks it against today's policy.
    permissive = make_server(runner_enabled=False)
    permissive.register(spec("over", **ceiling.fields(ceiling.over)))
    permissive.stop()
    keywords = configure(form, {ceiling.setting: ceiling.value}, monkeypatch, tmp_path)
    strict = make_server(runner_enabled=False, **keywords)

    registration = strict.http.post(
        DEFINITIONS, json=spec("over-again", **ceiling.fields(ceiling.over))
    )
    assert_refused(registration, ceiling.field, ceiling.setting)
    submission = strict.http.post(JOBS, json={"definition": "over"})
    assert_refused(submission, ceiling.field, ceiling.setting)
    assert (
        strict.http.post(DEFINITIONS, json=spec("at", **ceiling.fields(ceiling.at))).status_code
        == 201
    )
    accepted = strict.submit(definition="at")
    if ceiling.setting == "max_timeout":
        # The job's own timeout, over the ceiling its definition keeps to.
        override = strict.http.post(JOBS, json={"definition": "at", "timeout": "2m"})
        assert_refused(override, "timeout", "max_timeout")
    assert [job["id"] for job in strict.http.get(JOBS).json()["items"]] == [accepted["id"]]


def test_at_the_ceilings_a_job_runs_with_the_limits_it_asked_for(
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    ceilings = {ceiling.setting: ceiling.value for ceiling in CEILINGS}
    server = make_server(**configure("file", ceilings, monkeypatch, tmp_path))
    server.register(spec("at", resources={"memory": "64Mi", "cpus": 0.5, "pids": 50}, timeout="1m"))
    job = server.submit(definition="at")
    server.wait_job(job["id"], {"running"})
    (container,) = containers_of(docker_client, job["id"])
    config = container.attrs["HostConfig"]
    assert (config["Memory"], config["NanoCpus"], config["PidsLimit"]) == (64 * MI, 5 * 10**8, 50)
    server.http.post(f"{JOBS}/{job['id']}/cancel")
    assert server.wait_job(job["id"])["status"] == "cancelled"


def test_at_the_default_memory_ceiling_a_job_runs_with_the_hosts_memory(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    # This host's memory, in bytes, as a definition may write it.
    server.register(spec("host", resources={"memory": host_memory(), "cpus": os.cpu_count()}))
    job = server.submit(definition="host")
    server.wait_job(job["id"], {"running"})
    (container,) = containers_of(docker_client, job["id"])
    assert container.attrs["HostConfig"]["Memory"] == host_memory()
    server.http.post(f"{JOBS}/{job['id']}/cancel")
    assert server.wait_job(job["id"])["status"] == "cancelled"


def test_a_runner_with_lower_ceilings_fails_the_job_without_running_it(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient
) -> None:
    api = make_server(runner_enabled=False)
    runner = make_server(policy_max_timeout="1m")
    api.register(spec("long", timeout="2m"))
    job = api.submit(definition="long")
    done = runner.wait_job(job["id"])
    assert done["status"] == "failed"
    assert done["error"] == (
        "this runner's container policy refuses the job: timeout: 2m is more than the server's "
        "policy allows (at most 1m, set by ORCH_POLICY_MAX_TIMEOUT)"
    )
    assert done["container_id"] is None
    assert containers_of(docker_client, job["id"]) == []


def test_the_drop_in_apis_refuse_in_their_own_shapes(
    make_server: Callable[..., LiveServer],
) -> None:
    permissive = make_server(runner_enabled=False)
    assert permissive.http.post("/v1/projects", json={"name": "ceil"}).status_code == 201
    assert (
        permissive.http.post("/v1/projects/ceil/queues", json={"name": "work"}).status_code == 201
    )
    permissive.register(spec("big", resources={"memory": "128Mi"}), project="ceil")
    permissive.register(spec("big", resources={"memory": "128Mi"}))
    made = permissive.http.post(
        "/v1/projects/default/queues", json={"name": "salad", "default_definition": "big"}
    )
    assert made.status_code == 201, made.text
    permissive.stop()
    strict = make_server(runner_enabled=False, policy_max_memory="64Mi")

    daestro = strict.http.post(
        "/v1/client/job", json={"job_definition": "ceil::big:1", "job_queue": "ceil::work"}
    )
    assert daestro.status_code == 403, daestro.text
    answer = daestro.json()
    assert set(answer) == {"ok", "message"} and answer["ok"] is False
    assert answer["message"].startswith("resources.memory: 128Mi is more than ")
    assert "ORCH_POLICY_MAX_MEMORY" in answer["message"]

    salad = strict.anonymous.post(
        f"{strict.url}/api/public/organizations/acme/projects/default/queues/salad/jobs",
        headers={"Salad-Api-Key": admin_token(strict.settings)},
        json={"input": {"n": 1}},
    )
    assert salad.status_code == 403, salad.text
    assert salad.headers["content-type"].startswith("application/problem+json")
    problem = salad.json()
    assert problem["status"] == 403
    assert problem["detail"].startswith("resources.memory: 128Mi is more than ")
    assert "ORCH_POLICY_MAX_MEMORY" in problem["detail"]
    for project in ("default", "ceil"):
        assert strict.http.get(f"/v1/projects/{project}/jobs").json()["items"] == []
