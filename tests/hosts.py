"""Test hosts: a second Docker engine on this machine and runner processes.

The second engine (``scripts/second-docker-engine``) is a separate dockerd standing in for a
second host. Runner processes are ``python -m orchestrator runner`` subprocesses, each logging to
a file whose last lines are added to the report of a test that fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from tests.conftest import TEST_IMAGE, build_busybox_image, unavailable

REPO_ROOT = Path(__file__).resolve().parent.parent
ENGINE_SCRIPT = REPO_ROOT / "scripts" / "second-docker-engine"
ENGINE_SCRIPT_TIMEOUT = 120.0  # seconds; the script itself gives up after 60 s
LOG_TAIL_LINES = 60


# --- a second Docker engine ----------------------------------------------------------------


def engine_script(command: str) -> str:
    """Run ``scripts/second-docker-engine COMMAND``; its output; fail with it on an error."""
    result = subprocess.run(
        [str(ENGINE_SCRIPT), command],
        capture_output=True,
        text=True,
        timeout=ENGINE_SCRIPT_TIMEOUT,
        check=False,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"second-docker-engine {command} exited {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
    return result.stdout.strip()


@dataclass
class SecondEngine:
    """The second engine: its DOCKER_HOST URL, a client for it, and stop/start (an outage)."""

    url: str
    client: docker.DockerClient

    def stop(self) -> None:
        """Stop the engine (its containers stop; their records stay) and wait until it exits."""
        # Close pooled connections first: the engine going away would leave them unclosed.
        self.client.close()
        engine_script("stop")

    def answers(self) -> bool:
        """Whether the engine is running and answers (``second-docker-engine status``)."""
        status = subprocess.run(
            [str(ENGINE_SCRIPT), "status"], capture_output=True, timeout=ENGINE_SCRIPT_TIMEOUT
        )
        return status.returncode == 0

    def start(self) -> None:
        """Start the engine again (same data root) and wait until it answers."""
        engine_script("start")


def remove_orchestrator_containers(client: docker.DockerClient) -> None:
    """Remove every container carrying an ``orchestrator.*`` label."""
    for container in client.containers.list(all=True, ignore_removed=True):
        if any(key.startswith("orchestrator.") for key in container.labels):
            container.remove(force=True)


@pytest.fixture(scope="session")
def second_engine() -> Iterator[SecondEngine]:
    """A second Docker engine with the busybox test image; stopped at the end of the session."""
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        unavailable("a second Docker engine (needs root and dockerd)")
    engine_script("start")
    url = engine_script("url")
    client = docker.DockerClient(base_url=url, timeout=60)
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        build_busybox_image(client, TEST_IMAGE)
    engine = SecondEngine(url=url, client=client)
    yield engine
    # A test may have left the engine stopped; it must answer to have its containers removed.
    engine.start()
    remove_orchestrator_containers(client)
    client.close()
    engine.stop()


# --- runner processes ----------------------------------------------------------------------


class RunnerProcess:
    """One subprocess (a runner) with its arguments, environment and log file kept for restarts."""

    def __init__(self, name: str, argv: Sequence[str], env: Mapping[str, str], log_path: Path):
        self.name = name
        self.argv = list(argv)
        self.env = dict(env)
        self.log_path = log_path
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        with self.log_path.open("ab") as log:
            log.write(f"--- start: {' '.join(self.argv)}\n".encode())
            log.flush()
            return subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=REPO_ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.process.poll() is None

    def kill9(self, timeout: float = 30.0) -> int:
        """SIGKILL (a crash: no clean-up runs) and wait for the exit; the return code."""
        self.process.kill()
        return self.process.wait(timeout)

    def terminate(self) -> None:
        """SIGTERM (a clean shutdown); ``wait()`` for the exit."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 30.0) -> int:
        """Wait for the process to exit; its return code (negative: the signal that ended it)."""
        return self.process.wait(timeout)

    def restart(self) -> None:
        """Start the process again with the same arguments and environment, once it has exited."""
        assert not self.alive, f"runner {self.name} is still running: kill or terminate it first"
        self.process = self._spawn()

    def log_text(self) -> str:
        """Everything the process (every start of it) wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def runner_argv(
    docker_host: str, name: str, capacity: int, queues: Sequence[str], extra_args: Sequence[str]
) -> list[str]:
    """The command line of a runner process."""
    argv = [sys.executable, "-m", "orchestrator", "runner", "--docker-host", docker_host]
    argv += ["--name", name, "--capacity", str(capacity)]
    if queues:
        argv += ["--queues", ",".join(queues)]
    return argv + list(extra_args)


def runner_env(database_url: str, data_dir: Path, env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its ``ORCH_*`` settings, plus the runner's own."""
    base = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    # Unbuffered: a runner killed with SIGKILL still leaves its last lines in the log.
    base["PYTHONUNBUFFERED"] = "1"
    base["ORCH_DATABASE_URL"] = database_url
    base["ORCH_DATA_DIR"] = str(data_dir)
    base.update(env)
    return base


def stop_all(processes: Sequence[RunnerProcess]) -> None:
    """Kill every process still running (and reap it)."""
    for process in processes:
        if process.alive:
            process.kill9()


RUNNERS = pytest.StashKey[list[RunnerProcess]]()


@pytest.fixture
def runner_processes(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., RunnerProcess]]:
    """Start runner processes; those still alive at the end of the test are killed."""
    started: list[RunnerProcess] = []
    request.node.stash[RUNNERS] = started

    def start(
        *,
        docker_host: str,
        name: str,
        database_url: str,
        data_dir: Path,
        capacity: int = 1,
        queues: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        extra_args: Sequence[str] = (),
    ) -> RunnerProcess:
        log_path = tmp_path / f"runner-{len(started)}-{name}.log"
        process = RunnerProcess(
            name,
            runner_argv(docker_host, name, capacity, queues, extra_args),
            runner_env(database_url, data_dir, env or {}),
            log_path,
        )
        started.append(process)
        return process

    yield start
    stop_all(started)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test's report shows the last lines of each of its runners' logs."""
    report = yield
    if report.failed:
        for process in item.stash.get(RUNNERS, []):
            state = "running" if process.alive else f"exited {process.process.returncode}"
            report.sections.append(
                (f"runner {process.name} ({state}), {process.log_path}", process.log_tail())
            )
    return report
