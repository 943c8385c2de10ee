"""The Dockerfile builds, and the server in its image keeps its jobs and its runner's name when
its container is killed and made again on the same volumes: as ``docker run`` with the SQLite
database on the data volume, and as ``compose.yaml`` with PostgreSQL.

There is no registry here: the image is built on the local base image that
``scripts/build-local-images`` makes (CI runs it; without it this test skips locally and fails
in CI), from wheels downloaded on this machine for the base image's Python.
"""

from __future__ import annotations

import abc
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from docker.models.containers import Container
from docker.utils import build

from ..conftest import TEST_IMAGE, unavailable, wait_for

pytestmark = pytest.mark.docker

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("ORCH_BASE_IMAGE", "orchestrator-base:bookworm")
POSTGRES_IMAGE = os.environ.get("ORCH_POSTGRES_IMAGE", "orchestrator-postgres:bookworm")
SOCKET = "/var/run/docker.sock"
# What compose.yaml reads from the environment.
COMPOSE_VARIABLES = frozenset(
    {
        "ORCH_BASE_IMAGE",
        "ORCH_IMAGE",
        "ORCH_PUBLISHED_PORT",
        "POSTGRES_IMAGE",
        "POSTGRES_PASSWORD",
        "DOCKER_GID",
    }
)
# A killed server's runner name is free again once its lease has run out: short here, so the
# made-again server need not wait the default 30 s.
RUNNER_LEASE_SECONDS = 5
# Every container, volume and image this module makes carries this label.
TEST_LABEL = "orchestrator-test.container-image"
# The job held running across the restart waits for this file, made by the test.
GO_FILE = "/tmp/go"
HELD_SCRIPT = (
    f'echo started; while [ ! -e {GO_FILE} ]; do sleep 0.1; done; cat "$ORCH_INPUT" > '
    '"$ORCH_OUTPUT"; echo finished'
)


def image_python(client: docker.DockerClient, image: str) -> tuple[str, str]:
    """The base image's Python (``3.11``) and its C library's version (``2.36``)."""
    printed = client.containers.run(
        image,
        [
            "python3",
            "-c",
            "import platform, sys; print(*sys.version_info[:2], platform.libc_ver()[1])",
        ],
        remove=True,
        labels={TEST_LABEL: "probe"},
    )
    major, minor, libc = printed.decode().split()
    return f"{major}.{minor}", libc


def download_wheels(directory: Path, source: Path, python: str, libc: str) -> None:
    """The package's wheel (built from ``source``) and its dependencies' (with PostgreSQL's)
    for ``python`` on a glibc ``libc`` machine, whatever Python runs the tests."""
    pip("wheel", "--no-deps", "-w", str(directory), str(source))
    (wheel,) = directory.glob("orchestrator-*.whl")
    machine = platform.machine()
    glibc_minor = int(libc.split(".")[1])
    # pip takes the platform tags as given: every manylinux one this C library runs.
    platforms = [f"manylinux_2_{n}_{machine}" for n in range(17, glibc_minor + 1)]
    platforms += [f"manylinux2014_{machine}", f"manylinux2010_{machine}", f"manylinux1_{machine}"]
    pip(
        "download",
        "-d",
        str(directory),
        "--only-binary=:all:",
        "--implementation=cp",
        f"--python-version={python}",
        *(f"--platform={tag}" for tag in platforms),
        "--constraint",
        str(source / "constraints.txt"),
        f"{wheel}[postgres]",
    )


def pip(*arguments: str) -> None:
    """Run the tests' pip; its output only when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "pip", *arguments], capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout + done.stderr


def build_context() -> Any:
    """The build context ``docker build .`` sends (``.dockerignore`` applied): a temporary tar
    file, at its start."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return build.tar(str(ROOT), exclude=patterns, dockerfile=("Dockerfile", None))


@pytest.fixture(scope="module")
def server_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The Dockerfile built on the local base image, offline; removed at the end."""
    try:
        docker_client.images.get(BASE_IMAGE)
    except docker.errors.ImageNotFound:
        unavailable(f"the base image {BASE_IMAGE} (scripts/build-local-images)")
    context = build_context()
    # The package's wheel is built from what the build gets, not from the checkout (whose
    # build/ may hold modules deleted since).
    source = tmp_path_factory.mktemp("context")
    with tarfile.open(fileobj=context) as archive:
        sent = {name.split("/")[0] for name in archive.getnames()}
        archive.extractall(source, filter="data")
    # What .dockerignore lets through, and nothing else (no tests, .git, caches or data).
    assert sent == {
        ".dockerignore",
        "Dockerfile",
        "README.md",
        "pyproject.toml",
        "constraints.txt",
        "orchestrator",
    }
    wheels = tmp_path_factory.mktemp("wheels")
    download_wheels(wheels, source, *image_python(docker_client, BASE_IMAGE))
    # Appended from the start: tarfile finds the archive's end by reading its members.
    context.seek(0)
    with tarfile.open(fileobj=context, mode="a") as archive:
        archive.add(wheels, arcname="wheels")
    context.seek(0)
    tag = f"orchestrator-test:{uuid.uuid4().hex[:10]}"
    stream = docker_client.api.build(
        fileobj=context,
        custom_context=True,
        tag=tag,
        buildargs={"BASE": BASE_IMAGE, "OFFLINE": "1"},
        labels={TEST_LABEL: "image"},
        rm=True,
        forcerm=True,
        decode=True,
        timeout=600,
    )
    errors = [chunk["error"] for chunk in stream if "error" in chunk]
    context.close()
    assert not errors, errors
    yield tag
    docker_client.images.remove(tag, force=True)


class Deployment(abc.ABC):
    """One way of running the image: starts its server container (again, on the same volumes),
    and removes everything it made at the end."""

    def __init__(self, client: docker.DockerClient) -> None:
        self.client = client
        self.runner_names: set[str] = set()
        # The installations its servers made projects' networks for.
        self.installations: set[str] = set()

    @abc.abstractmethod
    def start(self) -> Container:
        """Start the server's container; it."""

    @abc.abstractmethod
    def remove(self) -> None:
        """Remove the containers, volumes and networks it made."""

    def remove_jobs(self) -> None:
        """The job and worker containers its runner left, and its projects' networks."""
        for name in self.runner_names:
            listed = self.client.containers.list(
                all=True, filters={"label": f"orchestrator.runner={name}"}, ignore_removed=True
            )
            for container in listed:
                container.remove(force=True)
        for installation in self.installations:
            label = f"orchestrator.installation={installation}"
            for network in self.client.networks.list(filters={"label": label}):
                network.remove()


class DockerRun(Deployment):
    """``docker run`` as the README shows it: SQLite on the data volume."""

    def __init__(self, client: docker.DockerClient, image: str) -> None:
        super().__init__(client)
        self.image = image
        self.volume = client.volumes.create(
            f"orchestrator-test-{uuid.uuid4().hex[:10]}", labels={TEST_LABEL: "data"}
        )
        self.containers: list[Container] = []

    def start(self) -> Container:
        container = self.client.containers.run(
            self.image,
            detach=True,
            ports={"8000/tcp": ("127.0.0.1", None)},
            volumes={
                SOCKET: {"bind": SOCKET, "mode": "rw"},
                self.volume.name: {"bind": "/data", "mode": "rw"},
            },
            group_add=[str(os.stat(SOCKET).st_gid)],
            environment={"ORCH_RUNNER_LEASE": str(RUNNER_LEASE_SECONDS)},
            # The image's health check, run every second.
            healthcheck={"interval": 1_000_000_000},
            labels={TEST_LABEL: "server"},
        )
        self.containers.append(container)
        return container

    def remove(self) -> None:
        for container in self.containers:
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass
        self.remove_jobs()
        self.volume.remove(force=True)


def compose_command() -> list[str]:
    """``docker compose`` (the plugin) or ``docker-compose`` (Debian's package)."""
    plugin = subprocess.run(["docker", "compose", "version"], capture_output=True)
    if plugin.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    unavailable("Docker Compose (apt-get install docker-compose)")
    raise AssertionError("unreachable")


class Compose(Deployment):
    """``compose.yaml``: the server and PostgreSQL (the local stand-in for postgres:16)."""

    def __init__(self, client: docker.DockerClient, image: str, directory: Path) -> None:
        super().__init__(client)
        try:
            client.images.get(POSTGRES_IMAGE)
        except docker.errors.ImageNotFound:
            unavailable(f"the PostgreSQL image {POSTGRES_IMAGE} (scripts/build-local-images)")
        self.project = f"orchestrator-test-{uuid.uuid4().hex[:10]}"
        override = directory / "compose.test.yaml"
        override.write_text(
            yaml.safe_dump(
                {
                    "services": {
                        "server": {
                            "environment": {"ORCH_RUNNER_LEASE": str(RUNNER_LEASE_SECONDS)},
                            "healthcheck": {"interval": "1s"},
                            "labels": {TEST_LABEL: "server"},
                        },
                        "postgres": {"labels": {TEST_LABEL: "postgres"}},
                    }
                }
            )
        )
        self.command = [
            *compose_command(),
            "--project-name",
            self.project,
            "--file",
            str(ROOT / "compose.yaml"),
            "--file",
            str(override),
        ]
        self.env = {
            **os.environ,
            "ORCH_IMAGE": image,
            "POSTGRES_IMAGE": POSTGRES_IMAGE,
            "POSTGRES_PASSWORD": secrets.token_hex(16),
            "DOCKER_GID": str(os.stat(SOCKET).st_gid),
            "ORCH_PUBLISHED_PORT": "0",
        }

    def compose(self, *arguments: str) -> None:
        subprocess.run([*self.command, *arguments], env=self.env, check=True, timeout=300)

    def start(self) -> Container:
        self.compose("up", "--detach", "--no-build")
        (container,) = self.client.containers.list(
            filters={
                "label": [
                    f"com.docker.compose.project={self.project}",
                    "com.docker.compose.service=server",
                ]
            }
        )
        return container

    def remove(self) -> None:
        self.compose("down", "--volumes", "--timeout", "5")
        self.remove_jobs()


@pytest.fixture(params=["sqlite-docker-run", pytest.param("postgres-compose")])
def deployment(
    request: pytest.FixtureRequest,
    docker_client: docker.DockerClient,
    server_image: str,
    busybox_image: str,
    tmp_path: Path,
) -> Iterator[Deployment]:
    """The image run by ``docker run`` (SQLite) or by ``compose.yaml`` (PostgreSQL)."""
    made: Deployment = (
        DockerRun(docker_client, server_image)
        if request.param == "sqlite-docker-run"
        else Compose(docker_client, server_image, tmp_path)
    )
    yield made
    made.remove()


def healthy(container: Container) -> bool:
    """The image's health check passes."""
    container.reload()
    return bool(container.attrs["State"].get("Health", {}).get("Status") == "healthy")


def api(container: Container) -> httpx.Client:
    """A client of the server in ``container``, on its published port, with the admin token."""
    container.reload()
    (binding,) = container.attrs["NetworkSettings"]["Ports"]["8000/tcp"]
    # Published on the loopback interface only.
    assert binding["HostIp"] == "127.0.0.1"
    exit_code, token = container.exec_run(["cat", "/data/admin-token"])
    assert exit_code == 0, token
    return httpx.Client(
        base_url=f"http://127.0.0.1:{binding['HostPort']}",
        headers={"Authorization": f"Bearer {token.decode().strip()}"},
        timeout=30,
    )


def started(deployment: Deployment) -> tuple[Container, httpx.Client]:
    """Start the server; once healthy, it and a client of its API."""
    container = deployment.start()
    wait_for(lambda: healthy(container), timeout=120, interval=0.5)
    return container, api(container)


def the_runner(http: httpx.Client, container: Container) -> dict[str, Any] | None:
    """The server's one runner, once the process in ``container`` has registered it (until the
    old one's lease runs out, the registry shows the killed container's)."""
    runners = http.get("/v1/runners").json()["items"]
    assert len(runners) <= 1, f"more than one runner: {[runner['name'] for runner in runners]}"
    hostname = container.attrs["Config"]["Hostname"]
    if not runners or runners[0]["state"] != "active" or runners[0]["hostname"] != hostname:
        return None
    return dict(runners[0])


def job_of(http: httpx.Client, job_id: str) -> dict[str, Any]:
    response = http.get(f"/v1/projects/default/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def job_in(http: httpx.Client, job_id: str, status: str) -> dict[str, Any] | None:
    job = job_of(http, job_id)
    return job if job["status"] == status else None


# The README's HTTP worker: busybox httpd answering each job with its input.
ECHO_WORKER_SCRIPT = """mkdir -p /www/cgi-bin
cat > /www/cgi-bin/echo <<'CGI'
#!/bin/sh
printf 'Content-Type: application/json\\r\\n\\r\\n'
head -c "$CONTENT_LENGTH"
CGI
chmod +x /www/cgi-bin/echo
echo ok > /www/health
exec httpd -f -p 8080 -h /www
"""
ECHO_WORKER = {
    "name": "echo-worker",
    "image": TEST_IMAGE,
    "command": ["sh", "-c", ECHO_WORKER_SCRIPT],
    "worker": {"port": 8080, "path": "/cgi-bin/echo", "readiness_path": "/health"},
    "timeout": "30s",
}


def register(http: httpx.Client, name: str, script: str) -> None:
    spec = {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]}
    response = http.post("/v1/projects/default/definitions", json=spec)
    assert response.status_code in (200, 201), response.text


def submit(http: httpx.Client, definition: str, input_data: dict[str, Any]) -> str:
    body = {"definition": definition, "input": input_data}
    response = http.post("/v1/projects/default/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# The first test's time includes building the image (about a minute on a loaded machine).
@pytest.mark.timeout(600)
def test_a_recreated_server_container_keeps_its_jobs_and_its_runner_name(
    deployment: Deployment, docker_client: docker.DockerClient
) -> None:
    first, http = started(deployment)
    runner = wait_for(lambda: the_runner(http, first), timeout=60)
    deployment.runner_names.add(runner["name"])
    # The name was made from the first container's host name, and kept on the data volume.
    assert runner["name"] == first.attrs["Config"]["Hostname"]

    register(http, "copy", 'cat "$ORCH_INPUT" > "$ORCH_OUTPUT"')
    register(http, "held", HELD_SCRIPT)
    done = submit(http, "copy", {"n": 1})
    job = wait_for(lambda: job_in(http, done, "succeeded"), timeout=60)
    assert job["output"] == {"n": 1}
    # The engine does not see the container's files: input and output went by the archive API.
    wait_for(lambda: b"instead of mounting them" in first.logs(), timeout=10)

    # An HTTP worker sits on the project's own network, out of the server container's reach:
    # the worker and the server's container both join the project's internal runner network.
    response = http.post("/v1/projects/default/definitions", json=ECHO_WORKER)
    assert response.status_code in (200, 201), response.text
    served = submit(http, "echo-worker", {"text": "hello"})
    (worker,) = wait_for(
        lambda: docker_client.containers.list(
            filters={"label": f"orchestrator.runner={runner['name']}", "name": "orch-worker-"}
        ),
        timeout=60,
    )
    deployment.installations.add(worker.labels["orchestrator.installation"])
    job = wait_for(lambda: job_in(http, served, "succeeded"), timeout=90)
    assert job["output"] == {"text": "hello"}
    # On the project's internal runner network, which never becomes its default route (its
    # published port stays where it was: the API answers on).
    first.reload()
    assert any(name.endswith(".runner") for name in first.attrs["NetworkSettings"]["Networks"])
    assert http.get("/healthz").status_code == 200

    held = submit(http, "held", {"n": 2})
    wait_for(lambda: job_in(http, held, "running"), timeout=60)
    wait_for(lambda: "started" in http.get(f"/v1/projects/default/jobs/{held}/logs").text)
    http.close()

    # Killed, as by a crash or `docker rm -f`, and made again on the same volumes.
    first.remove(force=True)
    second, http = started(deployment)
    try:
        assert second.attrs["Config"]["Hostname"] != first.attrs["Config"]["Hostname"]
        again = wait_for(lambda: the_runner(http, second), timeout=60)
        assert again["name"] == runner["name"]

        (job_container,) = docker_client.containers.list(
            filters={"label": f"orchestrator.job-id={held}"}
        )
        assert job_container.labels["orchestrator.runner"] == runner["name"]
        exit_code, said = job_container.exec_run(["touch", GO_FILE])
        assert exit_code == 0, said
        job = wait_for(lambda: job_in(http, held, "succeeded"), timeout=60)
        # Adopted, not run again: one attempt, its output and its whole log.
        assert job["attempt"] == 1
        assert job["output"] == {"n": 2}
        logs = http.get(f"/v1/projects/default/jobs/{held}/logs").text
        assert logs == "started\nfinished\n"
        assert job_of(http, done)["output"] == {"n": 1}
    finally:
        http.close()


def test_the_compose_file_publishes_on_loopback_and_needs_its_secrets() -> None:
    command = [*compose_command(), "--file", str(ROOT / "compose.yaml"), "config"]
    # The file's defaults, as a user gets them.
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    env |= {"POSTGRES_PASSWORD": "example", "DOCKER_GID": "999"}
    printed = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    config = yaml.safe_load(printed.stdout)
    assert set(config["services"]) == {"server", "postgres"}
    server = config["services"]["server"]
    (port,) = server["ports"]
    if isinstance(port, str):  # docker-compose 1.x
        assert port.startswith("127.0.0.1:8000:8000")
    else:  # the plugin's long form
        assert (port["host_ip"], str(port["published"]), port["target"]) == (
            "127.0.0.1",
            "8000",
            8000,
        )
    assert server["environment"]["ORCH_DATABASE_URL"] == (
        "postgresql+psycopg://orch:example@postgres:5432/orchestrator"
    )
    assert server["build"]["args"]["BASE"] == "python:3.12-slim"
    assert config["services"]["postgres"]["image"] == "postgres:16"

    for missing in ("POSTGRES_PASSWORD", "DOCKER_GID"):
        without = {k: v for k, v in env.items() if k != missing}
        refused = subprocess.run(command, env=without, capture_output=True, text=True)
        assert refused.returncode != 0
        assert f"set {missing}" in refused.stderr


def test_the_dockerfile_defaults_to_the_official_python_image() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    (base,) = [line for line in lines if line.startswith("ARG BASE=")]
    assert base.startswith("ARG BASE=python:3.") and base.endswith("-slim")
