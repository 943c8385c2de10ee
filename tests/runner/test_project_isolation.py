"""Projects apart below the API, on a live server (SQLite and PostgreSQL): each project's job and
worker containers join a network of its own, so a job reaches its own project's containers and
no other project's; named volumes are each project's own; a shared network or volume only when
the policy allows it. Networks and volumes carry the installation and the project. And on the
engine alone: runners racing to make a project's network end on one."""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import docker
import httpx
import pytest

from orchestrator.docker.engine import DockerEngine
from orchestrator.docker.spec import ContainerSpec
from orchestrator.errors import ContainerFailure
from orchestrator.storage.db import Database

from .. import workers
from ..conftest import TEST_IMAGE, LiveServer, installation_of, wait_for
from ..workers import READY_PATH, WORKER_PORT, worker_definition

worker_image = workers.worker_image

# A job whose only work is to GET ``$TARGET_PATH`` from ``$TARGET`` (host and port; 2 s to
# connect): it succeeds iff it reaches it, and logs the answer.
PROBE = {
    "name": "probe",
    "image": TEST_IMAGE,
    "command": [
        "sh",
        "-c",
        'printf "GET $TARGET_PATH HTTP/1.0\\r\\n\\r\\n" | nc -w 2 $TARGET',
    ],
}
# A job that serves "job page" on port 8081 until it is cancelled.
SERVE = {
    "name": "serve",
    "image": TEST_IMAGE,
    "command": [
        "sh",
        "-c",
        "mkdir /tmp/w && echo job page > /tmp/w/index.html && exec httpd -f -p 8081 -h /tmp/w",
    ],
}
# A job that prints what the volume mounted at /data holds, then writes its word there.
NOTE = "cat /data/note 2>/dev/null; echo Param::word > /data/note"
TEST_LABEL = {"orchestrator.test": "project-isolation"}


def make_project(server: LiveServer, name: str) -> None:
    response = server.http.post("/v1/projects", json={"name": name})
    assert response.status_code == 201, response.text


def run(server: LiveServer, project: str, **body: Any) -> dict[str, Any]:
    """Submit a job to ``project``; the job as submitted."""
    response = server.http.post(f"/v1/projects/{project}/jobs", json=body)
    assert response.status_code == 201, response.text
    return dict(response.json())


def finished(server: LiveServer, project: str, job_id: str) -> dict[str, Any]:
    """Wait until the job is terminal; the job with its log as ``log``."""

    def done() -> dict[str, Any] | None:
        job = server.http.get(f"/v1/projects/{project}/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    job = dict(wait_for(done, timeout=90))
    job["log"] = server.http.get(f"/v1/projects/{project}/jobs/{job_id}/logs").text
    return job


def address(client: docker.DockerClient, container_id: str, network: str) -> str:
    """The container's address on ``network``; it must be on that network alone."""
    networks = client.containers.get(container_id).attrs["NetworkSettings"]["Networks"]
    assert list(networks) == [network]
    return str(networks[network]["IPAddress"])


def network_of(server: LiveServer, project: str) -> str:
    return f"orch-{installation_of(server.settings)[:12]}-{project}"


def started_worker(server: LiveServer, project: str) -> str:
    """Run one job on the project's ``web`` worker; the worker container's id (left idle)."""
    job = finished(server, project, run(server, project, definition="web", input={"n": 1})["id"])
    assert job["status"] == "succeeded", job
    return str(job["container_id"])


def probes(
    server: LiveServer, targets: dict[str, tuple[str, str, str]]
) -> dict[str, dict[str, Any]]:
    """Run a probe per ``name -> (project, "host port", path)`` at once; each finished job."""
    submitted = {
        name: (
            project,
            run(server, project, definition="probe", env={"TARGET": to, "TARGET_PATH": path}),
        )
        for name, (project, to, path) in targets.items()
    }
    return {name: finished(server, p, job["id"]) for name, (p, job) in submitted.items()}


@pytest.fixture
def test_resources(docker_client: docker.DockerClient) -> Iterator[Callable[[str], str]]:
    """Make a network (``"network"``) or a volume (``"volume"``) outside any project, as an
    administrator would for sharing; removed at the end of the test (after its servers, which
    tests set up after this fixture). Its name."""
    made: list[Any] = []

    def make(kind: str) -> str:
        name = f"orch-test-{uuid.uuid4().hex[:10]}"
        if kind == "network":
            made.append(docker_client.networks.create(name, labels=TEST_LABEL))
        else:
            made.append(docker_client.volumes.create(name, labels=TEST_LABEL))
        return name

    yield make
    for resource in made:
        for container in docker_client.containers.list(all=True, ignore_removed=True):
            if resource.name in str(container.attrs["HostConfig"]):
                with contextlib.suppress(docker.errors.APIError):  # being removed already
                    container.remove(force=True)
        resource.remove()


def test_a_job_reaches_its_own_projects_containers_and_no_other_projects(
    server: LiveServer, worker_image: str, docker_client: docker.DockerClient
) -> None:
    installation = installation_of(server.settings)
    for project in ("blue", "green"):
        make_project(server, project)
        server.register({**worker_definition("web", worker_image, idle_timeout="10m")}, project)
        server.register(PROBE, project)
    server.register(SERVE, "green")
    workers = {project: started_worker(server, project) for project in ("blue", "green")}
    serving = run(server, "green", definition="serve")
    wait_for(
        lambda: server.http.get(f"/v1/projects/green/jobs/{serving['id']}").json()["container_id"]
    )
    serve_id = server.http.get(f"/v1/projects/green/jobs/{serving['id']}").json()["container_id"]

    blue_net, green_net = network_of(server, "blue"), network_of(server, "green")
    blue_worker = f"{address(docker_client, workers['blue'], blue_net)} {WORKER_PORT}"
    green_worker = f"{address(docker_client, workers['green'], green_net)} {WORKER_PORT}"
    green_job = f"{address(docker_client, serve_id, green_net)} 8081"
    # The runner, on the host, reaches every project's containers.
    page = f"http://{green_job.replace(' ', ':')}/"
    wait_for(lambda: httpx.get(page, timeout=2).status_code == 200, timeout=30)

    found = probes(
        server,
        {
            "blue to its worker": ("blue", blue_worker, READY_PATH),
            "blue to green's worker": ("blue", green_worker, READY_PATH),
            "blue to green's job": ("blue", green_job, "/"),
            "green to blue's worker": ("green", blue_worker, READY_PATH),
            "green to its worker": ("green", green_worker, READY_PATH),
            "green to its job": ("green", green_job, "/"),
        },
    )
    reached = {name for name, job in found.items() if job["status"] == "succeeded"}
    assert reached == {"blue to its worker", "green to its worker", "green to its job"}, found
    assert "ready" in found["blue to its worker"]["log"]
    assert "job page" in found["green to its job"]["log"]
    assert all(job["status"] == "failed" for name, job in found.items() if name not in reached)

    # Each project's network carries the installation and the project; the probes joined it.
    for project, name in (("blue", blue_net), ("green", green_net)):
        (network,) = docker_client.networks.list(names=[name])
        assert network.attrs["Labels"] == {
            "orchestrator.installation": installation,
            "orchestrator.project": project,
        }
        assert network.attrs["Driver"] == "bridge"
    probe = found["blue to green's job"]["container_id"]
    assert probe is None or not docker_client.containers.list(all=True, filters={"id": probe})


def test_a_shared_network_needs_the_policy(
    test_resources: Callable[[str], str],
    make_server: Callable[..., LiveServer],
    worker_image: str,
    docker_client: docker.DockerClient,
) -> None:
    shared = test_resources("network")
    strict = make_server()
    for network in (shared, "bridge"):
        response = strict.http.post(
            "/v1/projects/default/definitions", json={**PROBE, "network": network}
        )
        assert response.status_code == 403, response.text
        body = response.json()
        assert body["field"] == "network"
        assert network in body["message"]
        assert "ORCH_POLICY_ALLOWED_NETWORKS" in body["message"]
    strict.stop()

    server = make_server(policy_allowed_networks=f"{shared},bridge")
    for project in ("blue", "green"):
        make_project(server, project)
    server.register(
        {**worker_definition("web", worker_image, idle_timeout="10m"), "network": shared}, "blue"
    )
    server.register({**PROBE, "network": shared}, "green")
    server.register(PROBE, "blue")
    worker = started_worker(server, "blue")
    to = f"{address(docker_client, worker, shared)} {WORKER_PORT}"

    found = probes(server, {"green on the shared network": ("green", to, READY_PATH)})
    assert found["green on the shared network"]["status"] == "succeeded", found
    assert "ready" in found["green on the shared network"]["log"]
    # Allowed, a network is joined as it is: the orchestrator neither labels nor removes it.
    assert docker_client.networks.get(shared).attrs["Labels"] == TEST_LABEL


def test_named_volumes_are_each_projects_own(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    installation = installation_of(server.settings)
    note = {
        "name": "note",
        "image": TEST_IMAGE,
        "command": ["sh", "-c", NOTE],
        "volumes": ["data:/data"],
    }
    for project in ("blue", "green"):
        make_project(server, project)
        server.register(note, project)

    def write(project: str, word: str) -> str:
        job = run(server, project, definition="note", parameters={"word": word})
        done = finished(server, project, job["id"])
        assert done["status"] == "succeeded", done
        return str(done["log"])

    assert write("blue", "first-blue").strip() == ""
    assert "first-blue" not in write("green", "first-green")
    assert write("blue", "second-blue").strip() == "first-blue"
    assert write("green", "second-green").strip() == "first-green"

    for project in ("blue", "green"):
        name = f"{network_of(server, project)}.data"
        assert docker_client.volumes.get(name).attrs["Labels"] == {
            "orchestrator.installation": installation,
            "orchestrator.project": project,
        }


def test_a_shared_volume_needs_the_policy(
    test_resources: Callable[[str], str],
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
) -> None:
    shared = test_resources("volume")
    note = {
        "name": "note",
        "image": TEST_IMAGE,
        "command": ["sh", "-c", NOTE],
        "volumes": ["data:/own", f"shared:{shared}:/data"],
    }
    strict = make_server()
    response = strict.http.post("/v1/projects/default/definitions", json=note)
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["field"] == "volumes[1]"
    assert shared in body["message"]
    assert "ORCH_POLICY_SHARED_VOLUMES" in body["message"]
    strict.stop()

    server = make_server(policy_shared_volumes=shared)
    for project in ("blue", "green"):
        make_project(server, project)
        server.register(note, project)
    first = finished(
        server,
        "blue",
        run(server, "blue", definition="note", parameters={"word": "from-blue"})["id"],
    )
    assert first["status"] == "succeeded", first
    second = finished(
        server,
        "green",
        run(server, "green", definition="note", parameters={"word": "from-green"})["id"],
    )
    assert second["status"] == "succeeded", second
    assert second["log"].strip() == "from-blue"
    assert docker_client.volumes.get(shared).attrs["Labels"] == TEST_LABEL


@pytest.mark.docker
@pytest.mark.parametrize("round_", range(3))
def test_runners_racing_to_make_a_project_network_end_on_one(
    docker_client: docker.DockerClient, busybox_image: str, database_url: str, round_: int
) -> None:
    # Four runners of one installation, each with its own engine and its own handle on the
    # database they share (Docker before 25 lets each create a network of the same name).
    installation = uuid.uuid4().hex
    labels = {"orchestrator.installation": installation, "orchestrator.project": "race"}
    name = f"orch-{installation[:12]}-race"
    databases = [Database(database_url) for _ in range(4)]
    engines = [
        DockerEngine(None, timeout=30, pool_size=2, shared_lock=database.shared_lock)
        for database in databases
    ]
    barrier = threading.Barrier(len(engines))
    made: list[str] = []

    def create(index: int, engine: DockerEngine) -> None:
        spec = ContainerSpec(
            name=f"{name}-{index}",
            image=busybox_image,
            command=["true"],
            env={},
            labels=labels,
            network=name,
            own_labels=labels,
            own_network=True,
        )
        barrier.wait()
        made.append(engine.create(spec))

    threads = [threading.Thread(target=create, args=pair) for pair in enumerate(engines)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert len(made) == len(engines)
        # Created, not started: each names the network it will join by its id.
        joined = {
            docker_client.api.inspect_container(container_id)["HostConfig"]["NetworkMode"]
            for container_id in made
        }
        listed = docker_client.networks.list(
            filters={"label": f"orchestrator.installation={installation}"}
        )
        assert [network.id for network in listed] == list(joined)
    finally:
        for container_id in made:
            docker_client.api.remove_container(container_id, force=True)
        for network in docker_client.networks.list(
            filters={"label": f"orchestrator.installation={installation}"}
        ):
            network.remove()
        for engine in engines:
            engine.close()
        for database in databases:
            database.dispose()


@pytest.mark.docker
def test_a_same_named_network_or_volume_of_someone_else_is_never_used(
    docker_client: docker.DockerClient, busybox_image: str
) -> None:
    installation = uuid.uuid4().hex
    labels = {"orchestrator.installation": installation, "orchestrator.project": "taken"}
    name = f"orch-{installation[:12]}-taken"
    # Made by someone else, under the names the project's would have, without its labels.
    squatter = docker_client.networks.create(name, labels=TEST_LABEL)
    volume = docker_client.volumes.create(f"{name}.data", labels=TEST_LABEL)
    engine = DockerEngine(None, timeout=30, pool_size=2)
    spec = ContainerSpec(
        name=f"{name}-probe",
        image=busybox_image,
        command=["true"],
        env={},
        labels=labels,
        network=name,
        own_labels=labels,
        own_network=True,
    )
    made: list[str] = []
    try:
        made.append(engine.create(spec))
        joined = docker_client.api.inspect_container(made[0])["HostConfig"]["NetworkMode"]
        (own,) = docker_client.networks.list(
            filters={"label": f"orchestrator.installation={installation}"}
        )
        assert joined == own.id != squatter.id
        assert own.name == name and own.attrs["Labels"] == labels
        with pytest.raises(ContainerFailure, match=r"volume .* was not made for this project"):
            engine.create(replace(spec, name=f"{name}-volume", own_volumes=(volume.name,)))
        squatter.reload()
        volume.reload()
        assert squatter.attrs["Labels"] == TEST_LABEL and volume.attrs["Labels"] == TEST_LABEL
    finally:
        for container_id in made:
            docker_client.api.remove_container(container_id, force=True)
        for network in docker_client.networks.list(
            filters={"label": f"orchestrator.installation={installation}"}
        ):
            network.remove()
        squatter.remove()
        volume.remove()
        engine.close()


def test_an_idle_projects_network_is_removed_and_a_busy_ones_kept(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient
) -> None:
    # The engine has address pools for about 30 networks: a network left by every project
    # that ever ran would stop the 31st from starting a job. A runner removes idle ones at
    # its first heartbeat (then every few minutes), so a restart shows it.
    first = make_server()
    for project in ("idle", "busy"):
        make_project(first, project)
        first.register({**PROBE, "name": "sleep", "command": ["sleep", "300"]}, project)
        first.register({**PROBE, "name": "quick", "command": ["true"]}, project)
    quick = finished(first, "idle", run(first, "idle", definition="quick")["id"])
    assert quick["status"] == "succeeded", quick
    sleeping = run(first, "busy", definition="sleep")
    wait_for(
        lambda: (
            first.http.get(f"/v1/projects/busy/jobs/{sleeping['id']}").json()["status"] == "running"
        )
    )
    idle_net, busy_net = network_of(first, "idle"), network_of(first, "busy")
    assert docker_client.networks.list(names=[idle_net])
    first.stop()

    second = make_server(runner_name=first.settings.runner_name)
    wait_for(lambda: not docker_client.networks.list(names=[idle_net]), timeout=60)
    # The same pass kept the network of the project whose job still runs, and its job runs on.
    (kept,) = docker_client.networks.list(names=[busy_net])
    assert kept.attrs["Labels"]["orchestrator.project"] == "busy"
    job = second.http.get(f"/v1/projects/busy/jobs/{sleeping['id']}").json()
    assert job["status"] == "running", job
    # The idle project's next job makes its network again.
    again = finished(second, "idle", run(second, "idle", definition="quick")["id"])
    assert again["status"] == "succeeded", again
    assert docker_client.networks.list(names=[idle_net])
