"""Each attempt's /run/orchestrator: a directory of the runner's bind-mounted into the container
when the engine shares the runner's disk, else the input and output copied in and out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.errors import ContainerFailure
from orchestrator.rules.containers import RUN_DIR
from orchestrator.runner.run_dirs import RunDirs
from orchestrator.services import attempts
from orchestrator.services.containers import container_name
from orchestrator.storage.db import Database

from ..conftest import (
    TEST_IMAGE,
    LiveServer,
    containers_of,
    installation_of,
    unavailable,
    wait_for,
)
from ..hosts import RunnerProcess, runner_argv, runner_env

ECHO_INPUT = (
    'cat "$ORCH_INPUT"; sleep 1; printf \'{"seen": %s}\' "$(cat $ORCH_INPUT)" > "$ORCH_OUTPUT"'
)


def sh(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A definition running ``script`` with busybox sh."""
    return {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script], **spec}


def run_dir_mount(container: Any) -> dict[str, Any] | None:
    """The container's mount at /run/orchestrator, if it has one."""
    container.reload()
    for mount in container.attrs["Mounts"]:
        if mount["Destination"] == RUN_DIR:
            return dict(mount)
    return None


def running_container(server: LiveServer, docker_client: docker.DockerClient, job_id: str) -> Any:
    """The container of a job once the job is running."""
    server.wait_job(job_id, {"running"})
    return wait_for(lambda: (containers_of(docker_client, job_id) or [None])[0])


# --- the directories themselves -----------------------------------------------------------


def test_a_run_dir_holds_the_input_and_is_writable_by_any_user(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path, "runner one/a", enabled=True)
    directory = dirs.create("orch-job-1", b'{"a": 1}')
    assert directory.parent == dirs.root
    assert directory.parent.parent == tmp_path / "runs"
    assert (directory / "input.json").read_bytes() == b'{"a": 1}'
    assert (directory / "input.json").stat().st_mode & 0o777 == 0o644
    assert directory.stat().st_mode & 0o777 == 0o777
    # Nobody else on the host may look inside the runner's directories.
    assert dirs.root.stat().st_mode & 0o077 == 0
    # Made again (an attempt's container created twice), it starts empty.
    (directory / "output.json").write_text("{}")
    dirs.create("orch-job-1", b"null")
    assert sorted(p.name for p in directory.iterdir()) == ["input.json"]
    # Two runners never share a directory, however alike their names.
    assert RunDirs(tmp_path, "runner one:a", enabled=True).root != dirs.root
    assert RunDirs(tmp_path, "x", enabled=False).shared is False
    assert RunDirs(tmp_path, "x", enabled=True).shared is None


def test_reading_the_output_follows_nothing_the_container_made(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path, "r", enabled=True)
    directory = dirs.create("orch-a-1", b"{}")
    output = directory / "output.json"
    assert dirs.read_output("orch-a-1", 100) is None
    output.write_bytes(b'{"ok": true}')
    assert dirs.read_output("orch-a-1", 100) == b'{"ok": true}'
    output.write_bytes(b"x" * 101)
    with pytest.raises(ContainerFailure, match="larger than 100 bytes"):
        dirs.read_output("orch-a-1", 100)
    # A link to one of the runner's own files is not read.
    host_file = tmp_path / "host-secret.json"
    host_file.write_text('{"host": "secret"}')
    output.unlink()
    output.symlink_to(host_file)
    assert dirs.read_output("orch-a-1", 100) is None
    # Nor is a FIFO (which would block the read) or a directory.
    output.unlink()
    os.mkfifo(output)
    assert dirs.read_output("orch-a-1", 100) is None
    output.unlink()
    output.mkdir()
    assert dirs.read_output("orch-a-1", 100) is None


def test_sweep_removes_only_the_named_directories(tmp_path: Path) -> None:
    dirs = RunDirs(tmp_path, "r", enabled=True)
    assert dirs.names() == set()
    dirs.sweep({"orch-a-1"})  # no directory yet: nothing to do
    for name in ("orch-a-1", "orch-b-2", "orch-c-1"):
        (dirs.create(name, b"{}") / "leftover").mkdir()
    assert dirs.names() == {"orch-a-1", "orch-b-2", "orch-c-1"}
    dirs.sweep(dirs.names() - {"orch-b-2"})
    assert sorted(p.name for p in dirs.root.iterdir()) == ["orch-b-2"]
    dirs.remove("orch-b-2")
    dirs.remove("orch-b-2")  # already gone: fine
    assert list(dirs.root.iterdir()) == []


# --- with a runner ------------------------------------------------------------------------


def test_input_and_output_go_through_a_mounted_directory(
    server: LiveServer, docker_client: docker.DockerClient
) -> None:
    server.register(sh("echo-input", ECHO_INPUT))
    job = server.submit(definition="echo-input", input={"text": "hi", "n": [1, 2]})
    mount = run_dir_mount(running_container(server, docker_client, job["id"]))
    assert mount is not None and mount["Type"] == "bind" and mount["RW"], mount
    source = Path(mount["Source"])
    runs = server.settings.data_dir / "runs"
    assert source.is_relative_to(runs), source
    assert json.loads((source / "input.json").read_text()) == {"text": "hi", "n": [1, 2]}

    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"seen": {"text": "hi", "n": [1, 2]}}
    assert server.logs(job["id"]) == '{"text": "hi", "n": [1, 2]}'
    # The directory goes with the container.
    wait_for(lambda: not source.exists())


def test_a_non_root_job_writes_its_output_and_a_link_is_not_followed(
    server: LiveServer, tmp_path: Path
) -> None:
    server.register(sh("as-nobody", 'echo "{\\"uid\\": $(id -u)}" > "$ORCH_OUTPUT"', user="65534"))
    nobody = server.wait_job(server.submit(definition="as-nobody")["id"])
    assert nobody["status"] == "succeeded", nobody
    assert nobody["output"] == {"uid": 65534}
    # The container owns what is in its directory: a link it leaves there as its output is
    # not followed into the runner's files.
    secret = tmp_path / "runner-only.json"
    secret.write_text('{"leaked": true}')
    server.register(sh("link-out", f'ln -s {secret} "$ORCH_OUTPUT"'))
    link = server.wait_job(server.submit(definition="link-out")["id"])
    assert link["status"] == "succeeded", link
    assert link["output"] is None


def test_off_copies_the_input_in_and_the_output_out(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient
) -> None:
    server = make_server(run_dir_mount="off")
    server.register(sh("echo-input", ECHO_INPUT, user="65534"))
    job = server.submit(definition="echo-input", input=[1, "two"])
    assert run_dir_mount(running_container(server, docker_client, job["id"])) is None
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"seen": [1, "two"]}
    assert not (server.settings.data_dir / "runs").exists()


def test_a_leftover_directory_is_swept_when_the_runner_starts(
    make_settings: Callable[..., Any], make_server: Callable[..., LiveServer]
) -> None:
    settings = make_settings()
    make_server(runner_enabled=False).stop()
    dirs = RunDirs(settings.data_dir, installation_of(settings), enabled=True)
    (dirs.create("orch-ended-while-away-1", b"{}") / "scratch").mkdir()
    make_server()
    wait_for(lambda: not dirs.path("orch-ended-while-away-1").exists())


def test_an_attempt_claimed_but_never_started_leaves_nothing_behind(
    make_server: Callable[..., LiveServer],
) -> None:
    """The runner stopped between making the attempt's directory and starting its container.
    Restarted, it gives the attempt back and runs the job again; nothing the first directory
    held (an output, say) reaches the job, and no directory is left."""
    api = make_server(runner_enabled=False)
    api.register(sh("no-output", 'cat "$ORCH_INPUT"'))
    job_id = api.submit(definition="no-output", input={"n": 1})["id"]
    name = f"gone-{uuid.uuid4().hex[:8]}"
    db = Database(str(api.settings.database_url))
    try:
        with db.transaction() as session:
            claimed = attempts.claim(session, name)
            assert claimed is not None and claimed.id == job_id
            first = container_name(claimed)
    finally:
        db.dispose()
    dirs = RunDirs(api.settings.data_dir, installation_of(api.settings), enabled=True)
    (dirs.create(first, b"{}") / "output.json").write_text('{"stale": true}')

    make_server(runner_name=name)
    done = api.wait_job(job_id)
    assert done["status"] == "succeeded", done
    assert done["output"] is None
    assert api.logs(job_id) == '{"n": 1}'
    wait_for(lambda: list(dirs.root.iterdir()) == [])


def test_a_runner_whose_files_the_engine_cannot_see_copies_instead(
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
    tmp_path: Path,
) -> None:
    """The runner of a container with the host's Docker socket: its data directory is its own,
    not the engine's. Here the runner has a private mount namespace with a tmpfs of its own over
    the directories of its attempts, so the engine never has them."""
    unshare = shutil.which("unshare")
    if unshare is None:
        unavailable("util-linux's unshare")
    probe = subprocess.run(
        [unshare, "--mount", "--propagation", "private", "true"], capture_output=True
    )
    if probe.returncode != 0:
        unavailable(f"private mount namespaces (unshare: {probe.stderr.decode().strip()})")
    server = make_server(runner_enabled=False)
    settings = server.settings
    name = f"private-{uuid.uuid4().hex[:8]}"
    runs = RunDirs(settings.data_dir, installation_of(settings), enabled=True).root
    runs.mkdir(parents=True)
    argv = [
        unshare, "--mount", "--propagation", "private",
        "sh", "-c", 'mount -t tmpfs tmpfs "$0" && exec "$@"', str(runs),
        *runner_argv("unix:///var/run/docker.sock", name, 2, (), ()),
    ]  # fmt: skip
    env = runner_env(str(settings.database_url), settings.data_dir, {})
    runner = RunnerProcess(name, argv, env, tmp_path / "private-runner.log")
    try:
        server.register(sh("echo-input", ECHO_INPUT))
        jobs = [server.submit(definition="echo-input", input={"n": n}) for n in range(3)]
        for n, job in enumerate(jobs):
            done = server.wait_job(job["id"])
            assert done["status"] == "succeeded", (done, runner.log_tail())
            assert done["runner"] == name
            assert done["output"] == {"seen": {"n": n}}
        log = runner.log_text()
        # Found out once, at the first job, and remembered.
        assert log.count("does not see this runner's files") == 1, log
        assert list(runs.iterdir()) == []
    finally:
        runner.kill9()
