"""``orchestrator db backup``: a copy of a live SQLite database, taken while a job runs, restored
with the key file into a new data dir: everything is there, the secrets are readable and the job
that was running is adopted as after a crash. PostgreSQL is refused with the ``pg_dump`` command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
import pytest

from orchestrator.rules.containers import RUN_DIR

from ..conftest import TEST_IMAGE, LiveServer, containers_of, wait_for

SECRET = "restored-secret-Zx81q"
DIGEST = hashlib.sha256(SECRET.encode()).hexdigest()
# The container proves it got the decrypted value without printing it: it outputs its hash.
HASH_SECRET = (
    'printf \'{"sha": "%s"}\' "$(printf %s "$API_TOKEN" | sha256sum | cut -d " " -f 1)"'
    ' > "$ORCH_OUTPUT"'
)
# Runs until the test leaves a file in its run dir: it is running for as long as the test needs.
HOLD = (
    f"echo up; until [ -e {RUN_DIR}/go ]; do sleep 0.1; done; echo down;"
    ' echo \'{"adopted": true}\' > "$ORCH_OUTPUT"'
)


def backup(
    data_dir: Path, target: Path, database_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    """``orchestrator db backup TARGET`` as its own process, with the server's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env["ORCH_DATA_DIR"] = str(data_dir)
    if database_url is not None:
        env["ORCH_DATABASE_URL"] = database_url
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", "db", "backup", str(target)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def listed(server: LiveServer, resource: str) -> dict[str, Any]:
    """Every item of a list endpoint of the default project, by its id or name."""
    answer = server.http.get(f"/v1/projects/default/{resource}")
    assert answer.status_code == 200, answer.text
    return {item.get("id", item.get("name")): item for item in answer.json()["items"]}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_backup_taken_while_a_job_runs_restores_everything(
    make_server: Callable[..., LiveServer], docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    # The database in the data dir, as by default. A short lease: the restored runner takes its
    # name back once the lease recorded in the backup runs out (the first server's process,
    # this one, is still alive, so the name is not free at once as after a real crash).
    lease = 3.0
    first = make_server(database_url=None, runner_lease=lease)
    data_dir = first.settings.data_dir
    first.register(
        {
            "name": "hash-secret",
            "image": TEST_IMAGE,
            "secrets": ["API_TOKEN"],
            "command": ["sh", "-c", HASH_SECRET],
        }
    )
    first.register({"name": "hold", "image": TEST_IMAGE, "command": ["sh", "-c", HOLD]})
    secret_env = {"API_TOKEN": SECRET}
    done = first.wait_job(first.submit(definition="hash-secret", secret_env=secret_env)["id"])
    assert done["output"] == {"sha": DIGEST}, done
    # A job that waits in a paused queue: its secret is read only after the restore.
    held = first.http.post("/v1/projects/default/queues", json={"name": "held", "paused": True})
    assert held.status_code == 201, held.text
    waiting = first.submit(definition="hash-secret", queue="held", secret_env=secret_env)
    schedule = first.http.post(
        "/v1/projects/default/schedules",
        json={
            "name": "nightly",
            "cron": "0 3 * * *",
            "target": {"job": {"definition": "hash-secret", "secret_env": secret_env}},
        },
    )
    assert schedule.status_code == 201, schedule.text
    running = first.submit(definition="hold")
    wait_for(lambda: first.logs(running["id"]) == "up\n")

    target = tmp_path / "backups" / "orchestrator.db"
    target.parent.mkdir()
    made = backup(data_dir, target)
    assert made.returncode == 0, made.stderr
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert str(target) in made.stdout
    # The key is not in the backup, and the command says which file to keep apart.
    assert f"the key file {data_dir / 'secret-key'}" in made.stdout
    assert "separately" in made.stdout
    # A second backup never overwrites the first.
    size = target.stat().st_size
    again = backup(data_dir, target)
    assert again.returncode == 1
    assert f"{target} exists" in again.stderr
    assert target.stat().st_size == size

    jobs, definitions = listed(first, "jobs"), listed(first, "definitions")
    schedules = listed(first, "schedules")
    assert jobs[running["id"]]["status"] == "running"
    first.stop()  # its container goes on running, as after a crash
    (container,) = containers_of(docker_client, running["id"])

    # The restore: the backup and the key file (kept apart) into a new data dir. The admin
    # token's file comes along too: tokens live in the database, and the old one still works.
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy(target, restored / "orchestrator.db")
    shutil.copy(data_dir / "secret-key", restored / "secret-key")
    shutil.copy(data_dir / "admin-token", restored / "admin-token")
    second = make_server(data_dir=restored, database_url=None, runner_lease=lease)
    # mkdir made it 0755 under the usual umask: the start made it private.
    assert stat.S_IMODE(restored.stat().st_mode) == 0o700

    assert listed(second, "jobs").keys() == jobs.keys()
    assert {key: item["status"] for key, item in listed(second, "jobs").items()} == {
        key: item["status"] for key, item in jobs.items()
    }
    assert listed(second, "definitions") == definitions
    assert listed(second, "schedules").keys() == schedules.keys()
    assert second.job(done["id"])["output"] == {"sha": DIGEST}

    # The job that was running is adopted: same attempt, its log goes on where it was.
    container.reload()
    (mount,) = [m for m in container.attrs["Mounts"] if m["Destination"] == RUN_DIR]
    Path(mount["Source"], "go").touch()
    adopted = second.wait_job(running["id"])
    assert adopted["status"] == "succeeded", adopted
    assert adopted["attempt"] == 1
    assert adopted["interrupted_attempts"] == 0
    assert adopted["output"] == {"adopted": True}
    assert second.logs(running["id"]) == "up\ndown\n"

    # The secrets stored before the backup are read with the restored key: the waiting job's
    # and the schedule's containers get the value.
    resumed = second.http.patch("/v1/projects/default/queues/held", json={"paused": False})
    assert resumed.status_code == 200, resumed.text
    assert second.wait_job(waiting["id"])["output"] == {"sha": DIGEST}
    fired = second.http.post("/v1/projects/default/schedules/nightly/trigger")
    assert fired.status_code == 202, fired.text

    def fired_job() -> str | None:
        runs = second.http.get("/v1/projects/default/schedules/nightly/runs").json()["items"]
        return next((run["job_id"] for run in runs if run["job_id"]), None)

    assert second.wait_job(wait_for(fired_job))["output"] == {"sha": DIGEST}


@pytest.mark.parametrize(
    "database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
def test_postgres_is_refused_with_the_pg_dump_command(database_url: str, tmp_path: Path) -> None:
    target = tmp_path / "orchestrator.dump"
    refused = backup(tmp_path / "data", target, database_url)
    assert refused.returncode == 2
    assert "pg_dump --format=custom" in refused.stderr
    assert f"--file={target}" in refused.stderr
    # The command names the database, never the URL (it may hold a password).
    assert database_url.rpartition("/")[2] in refused.stderr
    assert database_url.partition("://")[2].partition("@")[0] not in refused.stderr
    assert not target.exists()


def test_a_missing_database_is_an_error_and_creates_nothing(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    refused = backup(data_dir, tmp_path / "copy.db")
    assert refused.returncode == 1
    assert f"there is no database at {data_dir / 'orchestrator.db'}" in refused.stderr
    assert not (tmp_path / "copy.db").exists()
    assert not data_dir.exists()
