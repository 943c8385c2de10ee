"""The GA4GH TES compliance suite (elixir-cloud-aai/openapi-test-runner, unmodified) against a
live server, on SQLite and PostgreSQL, with HTTP Basic credentials in the server URL as it sends
them. Each test file runs on its own and its JSON report must say PASS.

The suite pins old pydantic, requests and jsonschema, so it lives in a venv of its own, made once
under the user's cache directory and reused (as ``test_generated_client.py`` does). Its source is
``ORCH_TEST_TES_SUITE``, else ``shared/tools/tes-compliance-suite`` beside the repository (the
main checkout's, for a git worktree); it is copied before it is installed or run, so nothing is
written into it.

``PASSING`` are the files this server passes, against a server with a runner (tasks run).
Not in it: ``create_task_ignore_error``, which reads a task's executor logs right after posting
it, without waiting for it to run (no server that runs tasks in the background can have them
then; ``tests/runner/test_tes_tasks.py`` checks ``ignore_error`` on tasks that ran).

The files that post ``s3://`` inputs and outputs of the bucket ``my-object-store`` run against a
server that may use that bucket (``ORCH_TES_S3_BUCKETS``) on a local S3 store (moto's server)
holding the objects they read, so their tasks run to the end; a server without it refuses them
with a 400 saying which schemes it supports.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from tests.conftest import (
    DATABASES,
    TEST_IMAGE,
    LiveServer,
    S3Server,
    admin_token,
    module_server,
    unavailable,
)

SUITE_COMMIT = "552ff3c"
PASSING = [
    "service_info",
    "create_task",
    "create_task_backend_parameters",
    "create_task_backend_parameters_negative",
    "get_task_minimal",
    "get_task_basic",
    "get_task_full",
    "list_tasks_minimal",
    "list_tasks_basic",
    "list_tasks_full",
    "list_tasks_page_size",
    "list_tasks_page_token",
    "filter_task_by_name",
    "filter_task_by_tag",
    "cancel_task",
    "cancel_task_functional",
    "create_task_functional",
    "filter_task_by_state",
    "create_task_inputs",
    "create_task_outputs",
    "create_task_optional_filetype",
    "create_task_streamable",
]
SUITE_BUCKET = "my-object-store"
SUITE_OBJECTS = ("file-1", "file1")
# The images the suite's tasks name, stood in for by the local busybox (no registry here).
SUITE_IMAGES = ("alpine", "ubuntu:20.04")
# Seconds one test file may take (the non-functional ones take about one).
FILE_TIMEOUT = 120


def suite_source() -> Path:
    """The suite's source: ``ORCH_TEST_TES_SUITE``, else ``shared/tools`` beside the repository's
    main checkout."""
    if os.environ.get("ORCH_TEST_TES_SUITE"):
        return Path(os.environ["ORCH_TEST_TES_SUITE"])
    here = Path(__file__).resolve().parents[2]
    common = subprocess.run(
        ["git", "-C", str(here), "rev-parse", "--path-format=absolute", "--git-common-dir"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    main = Path(common).parent if common else here
    return main.parent / "shared" / "tools" / "tes-compliance-suite"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orchestrator-tests"


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the runner's command, a copy of the suite to run it in), the venv made on first use (a
    lock keeps two test processes from building it at once)."""
    source = suite_source()
    if not (source / "setup.py").is_file():
        unavailable(f"the TES compliance suite at {source} (set ORCH_TEST_TES_SUITE)")
    copy = tmp_path_factory.mktemp("tes-suite") / "suite"
    shutil.copytree(source, copy)
    for path in copy.rglob("*"):
        path.chmod(path.stat().st_mode | 0o200)
    copy.chmod(copy.stat().st_mode | 0o200)
    venv = cache_dir() / f"tes-compliance-suite-{SUITE_COMMIT}"
    command = venv / "bin" / "openapi-test-runner"
    done = venv / "installed"  # written last: a venv half built by a killed run is rebuilt
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
            installed = subprocess.run(
                [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(copy)],
                capture_output=True,
                text=True,
            )
            if installed.returncode != 0:
                unavailable(f"the TES compliance suite's dependencies: {installed.stderr[-2000:]}")
            done.write_text(SUITE_COMMIT)
    return command, copy


@pytest.fixture(scope="session")
def suite_images(docker_client: docker.DockerClient, busybox_image: str) -> None:
    """``alpine`` and ``ubuntu:20.04`` as tags of the local busybox image, where absent (never
    removed: other processes share the engine and may use them)."""
    image = docker_client.images.get(TEST_IMAGE)
    for name in SUITE_IMAGES:
        try:
            docker_client.images.get(name)
        except docker.errors.ImageNotFound:
            repository, _, tag = name.partition(":")
            image.tag(repository, tag or "latest")


@pytest.fixture(scope="module", params=DATABASES)
def server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
    suite_images: None,
    s3_server: S3Server,
) -> Iterator[LiveServer]:
    """A server with its runner on each database, which may use the suite's bucket."""
    root = tmp_path_factory.mktemp(f"tes-compliance-{request.param}")
    s3_server.client.create_bucket(Bucket=SUITE_BUCKET)
    for key in SUITE_OBJECTS:
        s3_server.client.put_object(Bucket=SUITE_BUCKET, Key=key, Body=b"compliance\n")
    with module_server(
        request.param,
        root,
        docker_client,
        runner_capacity=4,
        tes_s3_buckets=SUITE_BUCKET,
        tes_s3_endpoint_url=s3_server.endpoint_url,
    ) as live:
        yield live


@pytest.mark.parametrize("name", PASSING)
def test_the_compliance_suite_passes(
    server: LiveServer, suite: tuple[Path, Path], name: str, tmp_path: Path
) -> None:
    command, copy = suite
    credentials = f"tes:{admin_token(server.settings)}"
    address = server.url.replace("http://", f"http://{credentials}@") + "/ga4gh/tes/"
    ran = subprocess.run(
        [
            str(command),
            "report",
            "--server",
            address,
            "--version",
            "1.1.0",
            "--test-path",
            f"tests/{name}.yml",
            "--output_path",
            str(tmp_path),
        ],
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=FILE_TIMEOUT,
    )
    report = tmp_path / "report.json"
    assert report.is_file(), ran.stdout[-3000:] + ran.stderr[-3000:]
    phases = json.loads(report.read_text())["phases"]
    failed = [
        (test["test_name"], case.get("message"))
        for phase in phases
        for test in phase["tests"]
        for case in test["cases"]
        if case["status"] != "PASS"
    ]
    assert failed == []
    assert [phase["status"] for phase in phases] == ["PASS"]
