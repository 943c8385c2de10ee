"""``orchestrator runner``: a runner alone, against the shared database and one Docker engine.

The process assembly (database, Docker) is imported when the command runs, not for ``--help``.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

import typer

from orchestrator.cli.output import configure_logging, fail, setting_errors
from orchestrator.errors import OrchestratorError

logger = logging.getLogger("orchestrator.runner")


def runner(
    docker_host: str = typer.Option(
        None,
        "--docker-host",
        help="The Docker engine to run jobs on: unix:///path, tcp://host:2376 or ssh://user@host "
        "[ORCH_DOCKER_HOST, else DOCKER_HOST or the local socket].",
    ),
    name: str = typer.Option(
        None, "--name", help="The runner's name, unique among runners [ORCH_RUNNER_NAME, hostname]."
    ),
    capacity: int = typer.Option(
        None, "--capacity", min=1, help="Jobs run at once [ORCH_RUNNER_CAPACITY, 4]."
    ),
    queues: str = typer.Option(
        None,
        "--queues",
        help="Take jobs only from these queues: a comma list of 'name' (any project) or "
        "'project::name' [ORCH_RUNNER_QUEUES, all].",
    ),
) -> None:
    """Run jobs from the shared database (ORCH_DATABASE_URL) on one Docker engine, without
    the API. SIGTERM or Ctrl-C drains: no new jobs, running ones finish (up to
    ORCH_DRAIN_TIMEOUT), then it exits; a second signal exits at once, leaving running
    containers to be adopted when the runner comes back."""
    from pydantic import ValidationError

    from orchestrator.config import Settings
    from orchestrator.process import Services

    overrides: dict[str, object] = {"runner_enabled": True}
    for key, value in (
        ("docker_host", docker_host),
        ("runner_name", name),
        ("runner_capacity", capacity),
        ("runner_queues", queues),
    ):
        if value is not None:
            overrides[key] = value
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        settings.container_policy()
    except ValidationError as exc:
        fail(f"invalid setting: {setting_errors(exc)}", code=2)
    except OrchestratorError as exc:
        fail(exc.message, code=2)
    configure_logging()
    try:
        services = Services.build(settings, api=False)
    except OrchestratorError as exc:
        fail(exc.message, code=2)
    assert services.runner is not None
    work = services.runner
    signals = threading.Event()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        signals.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logger.info(
        "runner %s on %s: capacity %d, queues %s",
        work.name,
        work.identity.docker_host,
        work.capacity,
        ",".join(work.queues) if work.queues else "all",
    )
    services.start()
    handled = 0
    while not work.done.is_set():
        signals.wait(0.2)
        signals.clear()
        while handled < len(received):
            handled += 1
            if handled == 1:
                work.drain()
            else:
                logger.info("second signal: leaving running jobs to be adopted")
                work.stop()
    services.close()
