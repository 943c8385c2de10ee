"""What an attempt whose container exited came to: its output, its exit code and the engine's
account of how the container ended (out of memory, killed from outside, removed, or stopped by
an engine restart), as the result the attempt records.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from orchestrator.docker.engine import DockerEngine
from orchestrator.docker.spec import ContainerState
from orchestrator.errors import ContainerMissing, EngineUnavailable, OrchestratorError
from orchestrator.rules.containers import OUTPUT_PATH
from orchestrator.rules.reasons import FailureReason
from orchestrator.runner.attempt_supervision import Exited
from orchestrator.runner.output import parse_output
from orchestrator.services import attempts
from orchestrator.services.containers import container_name
from orchestrator.storage.models import Job, utcnow

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)

# Exit codes of a container killed by SIGKILL or SIGTERM.
SIGNAL_EXIT_CODES = frozenset({137, 143})
# How long after such an exit an engine shutting down has stopped answering.
ENGINE_SHUTDOWN_WINDOW = 5.0


def read_output(context: AttemptContext, job: Job, container_id: str) -> bytes | None:
    """The bytes at ``$ORCH_OUTPUT``: from the attempt's directory when it has one."""
    max_bytes = context.settings.max_output_bytes
    name = container_name(job)
    if context.run_dirs.path(name).is_dir():
        try:
            return context.run_dirs.read_output(name, max_bytes)
        except PermissionError:
            # Written by a user of the container's that the runner's user may not read.
            pass
    return context.engine.read_file(container_id, OUTPUT_PATH, max_bytes)


def collect(
    context: AttemptContext,
    job: Job,
    container_id: str,
    exited: Exited,
    *,
    cancel: threading.Event,
    secrets: Iterable[str],
) -> attempts.AttemptResult:
    """What the attempt came to, from its exit code, its output and the engine.

    A container removed or killed through the engine by someone else (``docker rm -f``,
    ``docker kill``, ``docker stop``) interrupts the attempt, as an engine restart does:
    the job gets a new attempt that does not count. Our own stops (a cancel, a timeout)
    are not interruptions, nor is a job that kills itself (no kill request reaches the
    engine then). The messages here are ours: they hold no secret value and are not
    masked (masking a short value would garble them). ``cancel`` is the attempt's cancel
    request, which may come while the outcome is read.
    """
    engine = context.engine
    exit_code, timed_out, engine_lost = exited.exit_code, exited.timed_out, exited.engine_lost
    stopped_by_us = timed_out or cancel.is_set()
    error = None
    output = None
    state: ContainerState | None = None
    vanished = exit_code is None
    try:
        raw = read_output(context, job, container_id)
        output, error = parse_output(raw, secrets)
        if exit_code != 0 and not vanished:
            state = engine.state(container_id)
            vanished = state is None
    except EngineUnavailable as exc:
        engine_lost = True
        error = f"could not read the output: {exc.message}"
    except ContainerMissing:
        vanished = True
    except OrchestratorError as exc:
        error = f"could not read the output: {exc.message}"
    oom_killed = state is not None and state.oom_killed
    killed_by = None
    if exit_code in SIGNAL_EXIT_CODES and not (stopped_by_us or oom_killed or vanished):
        # Killed by a signal nobody here sent: a stopping engine sends SIGTERM to every
        # container before it goes away. Its exit code comes back before the engine stops
        # answering, so look a moment longer.
        engine_lost = engine_lost or _engine_goes_away(engine)
        if not engine_lost:
            # ``docker rm -f`` kills first: the container may have been on its way out.
            vanished = engine.state(container_id) is None
        if not (engine_lost or vanished) and state is not None:
            killed_by = _kill_request(engine, job.id, container_id, state)
    interrupted: FailureReason | None = None
    reason: FailureReason | None = None
    if vanished and not stopped_by_us:
        interrupted = FailureReason.CONTAINER_VANISHED
        error = "the container was removed while it ran, not by this runner"
    elif engine_lost and exit_code != 0 and not stopped_by_us:
        interrupted = FailureReason.ENGINE_UNAVAILABLE
        context.engine_lost("the engine stopped answering as the container was killed")
        error = (
            f"the container exited with code {exit_code} while its Docker engine was "
            "unavailable (an engine restart stops its containers)"
        )
    elif killed_by is not None:
        interrupted = FailureReason.CONTAINER_KILLED
        error = (
            f"the container was stopped from outside (signal {killed_by} sent through the "
            "Docker engine, not by this runner)"
        )
    elif timed_out:
        error = f"timed out after {job.timeout:g}s"
    elif oom_killed:
        reason = FailureReason.OOM_KILLED
        error = "the container ran out of memory and was killed"
    elif error is None and exit_code != 0 and not cancel.is_set():
        error = f"the container exited with code {exit_code}"
    return attempts.AttemptResult(
        exit_code=exit_code,
        output=output,
        error=error,
        timed_out=timed_out,
        cancelled=cancel.is_set(),
        interrupted=interrupted,
        reason=reason,
        log_line=exited.last_line,
    )


def _engine_goes_away(engine: DockerEngine) -> bool:
    """Whether the engine stops answering within ``ENGINE_SHUTDOWN_WINDOW`` seconds."""
    deadline = time.monotonic() + ENGINE_SHUTDOWN_WINDOW
    while time.monotonic() < deadline:
        try:
            engine.ping()
        except EngineUnavailable:
            return True
        time.sleep(0.2)
    return False


def _kill_request(
    engine: DockerEngine, job_id: str, container_id: str, state: ContainerState
) -> str | None:
    """The signal of a kill request the engine received for the container since it
    started (none of ours: we sent none), or None."""
    since = (state.started_at or utcnow()).timestamp() - 1
    try:
        signals = engine.kill_signals(container_id, since)
    except OrchestratorError as exc:
        logger.warning(
            "could not read the engine's events: %s",
            exc.message,
            extra={"action": "engine_events_failed", "job_id": job_id},
        )
        return None
    return signals[-1] if signals else None
