"""Private files: the data dir is 0700 and the database, the key file and the admin token are
0600, on a fresh start under umask 022 and after a start on a data dir others could read; a job
running as a non-root user still reads its input and writes its output through its bind mount."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.rules.containers import RUN_DIR
from orchestrator.storage.private_files import (
    create_private_file,
    database_files,
    prepare_sqlite_file,
    secure_data_dir,
    sqlite_file,
)

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for


@pytest.fixture
def umask_022() -> Iterator[None]:
    """The usual umask, which alone would leave new files 0644 and new directories 0755."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def private_files(server: LiveServer) -> list[Path]:
    """The server's files that exist now and must be 0600."""
    data_dir = server.settings.data_dir
    paths = [data_dir / "secret-key", data_dir / "admin-token"]
    database = sqlite_file(server.settings.resolved_database_url())
    if database is not None:
        paths.extend(database_files(database))
    return [path for path in paths if path.exists()]


def tightened(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The log records that said what a start made private."""
    return [r for r in caplog.records if getattr(r, "action", None) == "private_files_tightened"]


def test_new_private_files_have_exact_modes_whatever_the_umask(tmp_path: Path) -> None:
    before = os.umask(0o277)  # would make a new file 0400 and a new directory 0500
    try:
        database = tmp_path / "new" / "orchestrator.db"
        prepare_sqlite_file(database)
        assert mode(database.parent) == 0o700
        assert mode(database) == 0o600
        assert database.stat().st_size == 0
        assert create_private_file(database) is False  # an existing file is kept as it is
        secure_data_dir(tmp_path / "data", [])
        assert mode(tmp_path / "data") == 0o700
    finally:
        os.umask(before)


def test_a_link_among_the_private_files_is_not_followed(tmp_path: Path) -> None:
    elsewhere = tmp_path / "someone-elses"
    elsewhere.write_text("")
    elsewhere.chmod(0o644)
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    (data_dir / "admin-token").symlink_to(elsewhere)
    assert secure_data_dir(data_dir, [data_dir / "admin-token"]) == []
    assert mode(elsewhere) == 0o644


@pytest.mark.fresh_database  # the server makes the database file itself
def test_a_fresh_start_under_umask_022_makes_everything_private(
    umask_022: None, make_server: Callable[..., LiveServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.storage.private_files")
    server = make_server()
    # Made private from the start: nothing to tighten, nothing said.
    assert tightened(caplog) == []
    data_dir = server.settings.data_dir
    assert mode(data_dir) == 0o700
    found = private_files(server)
    names = {path.name for path in found}
    assert {"secret-key", "admin-token"} <= names
    if server.services.db.dialect == "sqlite":
        # The server has the database open in WAL mode: its journal files are there too.
        assert {"orchestrator.db", "orchestrator.db-wal", "orchestrator.db-shm"} <= names
    assert {path.name: mode(path) for path in found} == {path.name: 0o600 for path in found}


def test_a_start_tightens_what_others_could_read_and_says_so(
    umask_022: None,
    make_server: Callable[..., LiveServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    first = make_server()
    first.stop()
    data_dir = first.settings.data_dir
    # As an older release, or a copy made by hand, would have left them.
    data_dir.chmod(0o755)
    loose = private_files(first)
    for path in loose:
        path.chmod(0o644)
    # The operator's own file in the data dir is not the server's to change.
    notes = data_dir / "notes.txt"
    notes.write_text("mine\n")
    notes.chmod(0o644)

    caplog.set_level(logging.INFO, logger="orchestrator.storage.private_files")
    second = make_server()
    assert mode(data_dir) == 0o700
    assert {path: mode(path) for path in private_files(second)} == {
        path: 0o600 for path in private_files(second)
    }
    assert mode(notes) == 0o644
    said = tightened(caplog)
    assert len(said) == 1, said
    assert said[0].levelno == logging.INFO
    message = said[0].getMessage()
    assert f"{data_dir} (0755)" in message
    for path in loose:
        assert f"{path} (0644)" in message
    assert "notes.txt" not in message

    # Already private: the next start has nothing to say.
    second.stop()
    caplog.clear()
    make_server()
    assert tightened(caplog) == []


def test_a_non_root_job_reads_its_input_and_writes_its_output_in_a_private_data_dir(
    umask_022: None,
    make_server: Callable[..., LiveServer],
    docker_client: docker.DockerClient,
) -> None:
    server = make_server()
    data_dir = server.settings.data_dir
    server.register(
        {
            "name": "as-user-1000",
            "image": TEST_IMAGE,
            "user": "1000",
            "command": [
                "sh",
                "-c",
                # Waits for the test's word, so its directory is there while the test looks.
                "until [ -e /run/orchestrator/go ]; do sleep 0.1; done; printf"
                ' \'{"uid": %s, "seen": %s}\' "$(id -u)" "$(cat "$ORCH_INPUT")" > "$ORCH_OUTPUT"',
            ],
        }
    )
    job = server.submit(definition="as-user-1000", input={"word": "hello"})
    server.wait_job(job["id"], {"running"})
    (container,) = wait_for(lambda: containers_of(docker_client, job["id"]))
    container.reload()
    (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == RUN_DIR]
    # The job's directory is inside the private data dir: the container reaches it through
    # its bind mount only.
    source = Path(mount["Source"])
    assert source.is_relative_to(data_dir)
    assert mode(data_dir) == 0o700

    # Another user of the host (here: a container of that user, with the data dir mounted at
    # its own path) cannot reach the same directory through the data dir; its owner can.
    outsider = "65534" if os.getuid() != 65534 else "1000"
    assert peek(docker_client, data_dir, source, outsider) == (1, "Permission denied")
    assert peek(docker_client, data_dir, source, str(os.getuid())) == (0, '{"word": "hello"}')

    (source / "go").touch()
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"uid": 1000, "seen": {"word": "hello"}}


def peek(client: docker.DockerClient, data_dir: Path, run_dir: Path, user: str) -> tuple[int, str]:
    """The exit code of ``cat`` of the run dir's input as ``user`` on the host, and what it
    printed (its error's reason, if it failed)."""
    container: Any = client.containers.run(
        TEST_IMAGE,
        ["cat", f"{run_dir}/input.json"],
        user=user,
        volumes={str(data_dir): {"bind": str(data_dir), "mode": "ro"}},
        detach=True,
    )
    try:
        code = container.wait(timeout=30)["StatusCode"]
        said = container.logs().decode().strip()
    finally:
        container.remove(force=True)
    return code, said.rsplit(": ", 1)[-1] if code else said
