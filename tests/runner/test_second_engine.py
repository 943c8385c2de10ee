"""The test hosts: the second Docker engine is a host of its own, and runner processes are run,
signalled, restarted and logged as the multi-runner tests need."""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from tests.conftest import TEST_IMAGE, wait_for
from tests.hosts import RunnerProcess, SecondEngine, runner_env, stop_all

LABEL = "orchestrator.test"


@pytest.fixture
def run_container() -> Iterator[Callable[..., Any]]:
    """Start a labelled busybox container on an engine; removed at the end of the test."""
    made: list[Any] = []

    def run(client: docker.DockerClient, *command: str) -> Any:
        container = client.containers.run(
            TEST_IMAGE,
            list(command),
            detach=True,
            name=f"orch-test-{uuid.uuid4().hex[:10]}",
            labels={LABEL: "second-engine"},
            # SIGKILL: an engine shutting down stops it at once instead of after 10 s.
            stop_signal="SIGKILL",
        )
        made.append(container)
        return container

    yield run
    for container in made:
        container.remove(force=True)


def bridge_subnet(client: docker.DockerClient) -> ipaddress.IPv4Network:
    """The subnet of the Linux bridge behind an engine's default network, as the kernel has it."""
    bridge = client.networks.get("bridge").attrs["Options"]["com.docker.network.bridge.name"]
    shown = subprocess.run(
        ["ip", "-json", "-4", "addr", "show", "dev", bridge],
        capture_output=True,
        text=True,
        check=True,
    )
    address = json.loads(shown.stdout)[0]["addr_info"][0]
    return ipaddress.ip_network(f"{address['local']}/{address['prefixlen']}", strict=False)


@pytest.mark.docker
def test_containers_of_one_engine_are_not_seen_on_the_other(
    second_engine: SecondEngine,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_container: Callable[..., Any],
) -> None:
    first = run_container(docker_client, "sleep", "300")
    second = run_container(second_engine.client, "sleep", "300")

    first_ids = {c.id for c in docker_client.containers.list(all=True, ignore_removed=True)}
    second_ids = {c.id for c in second_engine.client.containers.list(all=True)}
    assert first.id in first_ids and first.id not in second_ids
    assert second.id in second_ids and second.id not in first_ids
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(second.id)


@pytest.mark.docker
def test_second_engine_containers_live_on_its_own_bridge(
    second_engine: SecondEngine,
    docker_client: docker.DockerClient,
    run_container: Callable[..., Any],
) -> None:
    container = run_container(second_engine.client, "sleep", "300")
    container.reload()

    subnet = bridge_subnet(second_engine.client)
    assert subnet != bridge_subnet(docker_client)
    assert not subnet.overlaps(bridge_subnet(docker_client))
    assert ipaddress.ip_address(container.attrs["NetworkSettings"]["IPAddress"]) in subnet


@pytest.mark.docker
def test_engine_restart_keeps_records_and_leaves_the_first_engine_alone(
    second_engine: SecondEngine,
    docker_client: docker.DockerClient,
    busybox_image: str,
    run_container: Callable[..., Any],
) -> None:
    first = run_container(docker_client, "sleep", "300")
    second = run_container(second_engine.client, "sleep", "300")
    first.reload()
    first_state = first.attrs["State"]

    try:
        second_engine.stop()
        assert not second_engine.answers()
        first.reload()
        assert first.attrs["State"] == first_state
    finally:
        second_engine.start()
    assert second_engine.answers()

    second.reload()
    assert second.status == "exited"
    first.reload()
    assert first.attrs["State"] == first_state
    assert first.exec_run(["echo", "alive"]).output == b"alive\n"


def test_a_bad_runner_invocation_exits_and_its_log_is_kept(
    runner_processes: Callable[..., RunnerProcess], tmp_path: Path
) -> None:
    runner = runner_processes(
        docker_host="unix:///nonexistent/docker.sock",
        name="bad",
        database_url=f"sqlite:///{tmp_path / 'orchestrator.db'}",
        data_dir=tmp_path / "data",
        queues=["a", "b"],
        extra_args=["--no-such-option"],
    )

    assert runner.wait(60) == 2
    assert not runner.alive
    log = runner.log_text()
    assert "runner --docker-host unix:///nonexistent/docker.sock --name bad --capacity 1" in log
    assert "--queues a,b" in log
    # Bad input is one line naming the option and where help is (cli/usage.py).
    assert "error: No such option: --no-such-option (see 'orchestrator runner --help')" in log


# The child prints its ORCH_* settings, then waits for a signal.
WAITER = (
    "import json, os, signal\n"
    "print(json.dumps(sorted(k for k in os.environ if k.startswith('ORCH_'))), flush=True)\n"
    "signal.pause()\n"
)


def test_a_process_is_signalled_restarted_and_killed_at_the_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A setting of the test process itself must not reach the runner.
    monkeypatch.setenv("ORCH_DOCKER_HOST", "tcp://not-this-one:2375")
    env = runner_env("sqlite:///x.db", tmp_path, {"ORCH_POLL_INTERVAL": "0.5"})
    argv = [sys.executable, "-c", WAITER]
    process = RunnerProcess("waiter", argv, env, tmp_path / "waiter.log")
    other = RunnerProcess("other", argv, env, tmp_path / "other.log")
    try:
        expected = '["ORCH_DATABASE_URL", "ORCH_DATA_DIR", "ORCH_POLL_INTERVAL"]'
        wait_for(lambda: expected in process.log_text())
        assert process.alive
        with pytest.raises(AssertionError, match="still running"):
            process.restart()

        process.terminate()
        assert process.wait(30) == -signal.SIGTERM
        assert not process.alive

        first_pid = process.pid
        process.restart()
        assert process.pid != first_pid
        wait_for(lambda: process.log_text().count(expected) == 2)
        assert process.log_text().count("--- start:") == 2

        assert process.kill9() == -signal.SIGKILL
        assert not process.alive

        # What the fixture does at the end of a test: every process still alive is killed.
        process.restart()
        stop_all([process, other])
        assert not process.alive and not other.alive
        assert other.process.returncode == -signal.SIGKILL
    finally:
        stop_all([process, other])
