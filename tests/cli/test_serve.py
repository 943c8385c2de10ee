"""``orchestrator serve`` as a process: a stop that was asked for is a clean exit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port, wait_for


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_server_stopped_by_a_signal_shuts_down_and_exits_zero(
    tmp_path: Path, stop: signal.Signals
) -> None:
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env.update(ORCH_DATA_DIR=str(tmp_path / "data"), ORCH_PORT=str(port))
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--no-runner"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(healthy)
        process.send_signal(stop)
        assert process.wait(30) == 0, log.read_text()
        assert "Application shutdown complete" in log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
