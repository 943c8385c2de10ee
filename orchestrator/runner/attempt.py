"""One attempt of one job: create, put the input in, start, supervise, collect, remove.

This module drives the attempt's life cycle on its own thread: a fresh run or the adoption of
one held before a restart, then supervision (``attempt_supervision.py``) and the outcome
(``attempt_outcome.py``). State changes go through ``attempts``; the container is removed only
after the outcome is committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from orchestrator.docker.engine import DockerEngine
from orchestrator.errors import (
    ContainerFailure,
    DatabaseUnavailable,
    EngineUnavailable,
    ImageUnavailable,
    MountSourceMissing,
    OrchestratorError,
    PolicyRefused,
)
from orchestrator.rules import crash_points
from orchestrator.rules.containers import INPUT_PATH
from orchestrator.rules.masking import mask
from orchestrator.rules.reasons import FailureReason
from orchestrator.runner.attempt_adoption import resumption, started_container
from orchestrator.runner.attempt_outcome import collect
from orchestrator.runner.attempt_supervision import Supervisor, store_logs
from orchestrator.runner.log_budget import LogBudget
from orchestrator.runner.log_pump import LogPump
from orchestrator.services import attempts, dependencies
from orchestrator.services.containers import container_name, container_spec
from orchestrator.storage.models import Job, utcnow

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)


class Attempt:
    """Runs or resumes one attempt on its own thread."""

    def __init__(self, context: AttemptContext, job: Job, *, adopted: bool) -> None:
        self.context = context
        self.job = job
        self.job_id = job.id
        self.number = job.attempt
        self.adopted = adopted
        self.container_id: str | None = job.container_id if adopted else None
        self._cancel = threading.Event()
        self._detach = threading.Event()
        self._abandon = threading.Event()
        # Set when the attempt ended without its outcome recorded: the runner adopts it again.
        self.unrecorded = False
        self._thread: threading.Thread | None = None
        self._secrets: dict[str, str] = {}
        # The job's volumes with each host path resolved by the runner's policy check.
        self._volumes: list[str] | None = None
        self._on_done: Callable[[Attempt], None] | None = None

    @classmethod
    def for_claimed(cls, context: AttemptContext, job: Job) -> Attempt:
        """A new attempt the runner just claimed."""
        return cls(context, job, adopted=False)

    @classmethod
    def for_adopted(cls, context: AttemptContext, job: Job) -> Attempt:
        """An attempt the runner held before a restart."""
        return cls(context, job, adopted=True)

    def start(self, on_done: Callable[[Attempt], None]) -> None:
        """Run in a background thread; ``on_done`` is called once, when the outcome is recorded
        (the container may still be being removed) or else when the thread ends."""
        self._on_done = on_done

        def target() -> None:
            try:
                self._run()
            except DatabaseUnavailable as exc:
                # Record nothing now: the runner adopts the attempt again (its container is
                # still there) once the database answers.
                logger.warning(
                    "could not record the attempt (%s); it will be adopted again",
                    exc.reason,
                    extra={"action": "attempt_unrecorded", "job_id": self.job_id},
                )
                self.unrecorded = True
            except Exception as exc:
                logger.exception(
                    "attempt crashed", extra={"action": "attempt_crashed", "job_id": self.job_id}
                )
                self._give_up(exc)
            finally:
                self._release()

        self._thread = threading.Thread(target=target, name=f"job-{self.job_id}", daemon=True)
        self._thread.start()

    def _give_up(self, exc: Exception) -> None:
        """After an unexpected error: end the attempt as failed rather than leave it running."""
        error = f"the runner failed while running this attempt ({type(exc).__name__}); see its log"
        try:
            self._finish(attempts.AttemptResult(error=error, reason=FailureReason.RUNNER_ERROR))
            self._remove()
        except Exception:
            logger.exception(
                "could not record the crashed attempt; it is left for adoption",
                extra={"action": "attempt_abandoned", "job_id": self.job_id},
            )
            self.unrecorded = True

    def cancel(self) -> None:
        """Stop the container (SIGTERM, grace, SIGKILL); the job ends ``cancelled``."""
        self._cancel.set()

    def detach(self) -> None:
        """Stop supervising but leave the container running (the runner is shutting down)."""
        self._detach.set()

    def abandon(self) -> None:
        """Kill and remove the container without recording anything: the attempt is no longer
        this runner's (another runner took it back while this one was lost)."""
        self._abandon.set()

    def join(self, timeout: float) -> None:
        """Wait for the attempt's thread to end."""
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        """Whether the attempt's thread is still running."""
        return self._thread is not None and self._thread.is_alive()

    def _release(self) -> None:
        """Give the runner its slot back, once."""
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)

    # --- the attempt ----------------------------------------------------------------------

    @property
    def _engine(self) -> DockerEngine:
        return self.context.engine

    def _finish(self, result: attempts.AttemptResult) -> None:
        with self.context.db.transaction() as session:
            attempts.finish(
                session,
                self.context.hub,
                self.job_id,
                self.context.name,
                self.number,
                result,
                self.context.settings.interruption_limit,
            )

    def _not_adoptable(self, unstarted: str, started: str) -> None:
        """After a restart, for an attempt whose supervision went with the old process: given
        back to the queue if it never started (``unstarted`` says why), else ended as
        interrupted (``started``: its error)."""
        if self.container_id is None:
            self._requeue(unstarted)
            return
        self._finish(
            attempts.AttemptResult(error=started, interrupted=FailureReason.RUNNER_STOPPED)
        )

    def _requeue(self, reason: str) -> None:
        with self.context.db.transaction() as session:
            attempts.requeue(
                session, self.context.hub, self.job_id, self.context.name, self.number, reason
            )

    def _remove(self) -> None:
        """Remove the container, then the attempt's directory if it had one."""
        if self.container_id is not None:
            try:
                self._engine.remove(self.container_id)
            except OrchestratorError as exc:
                logger.warning(
                    "could not remove container: %s",
                    exc.message,
                    extra={"action": "container_remove_failed", "job_id": self.job_id},
                )
        self.context.run_dirs.remove(container_name(self.job))

    def _run(self) -> None:
        try:
            self._secrets = attempts.secret_values(self.job, self.context.box)
        except OrchestratorError as exc:
            # No key of this runner opens the job's secrets (a pruned or foreign key): the job
            # can never run here, so end it rather than leave it starting.
            self._finish(
                attempts.AttemptResult(
                    error=exc.message, retryable=False, reason=FailureReason.CREATE_FAILED
                )
            )
            self._remove()
            return
        if self.adopted:
            self._resume()
            return
        if self._input_refused():
            return
        try:
            # This runner's policy may be stricter than the one that accepted the job.
            resolved = self.context.policy.resolve_for_runner(
                self.job.container, timeout=self.job.timeout
            )
            self._volumes = resolved["volumes"]
        except PolicyRefused as exc:
            error = f"this runner's container policy refuses the job: {exc.message}"
            refused = FailureReason.POLICY_REFUSED
            self._finish(attempts.AttemptResult(error=error, retryable=False, reason=refused))
            return
        try:
            self.container_id = self._create()
            self._crash_point("created")
            if self._cancel.is_set():
                self._remove()
                self._finish(attempts.AttemptResult(cancelled=True))
                return
            self._engine.start(self.container_id)
            self._crash_point("started")
        except EngineUnavailable as exc:
            self.context.engine_lost(exc.message)
            self._remove_quietly()
            self._requeue(exc.message)
            return
        except (ImageUnavailable, ContainerFailure) as exc:
            self._remove_quietly()
            message = mask(exc.message, self._secrets.values())
            reason = (
                FailureReason.IMAGE_MISSING
                if isinstance(exc, ImageUnavailable)
                else FailureReason.CREATE_FAILED
            )
            self._finish(attempts.AttemptResult(error=message, retryable=False, reason=reason))
            return
        if self._record_running(self.container_id):
            self._supervise(since=None, started=time.monotonic())

    def _input_refused(self) -> bool:
        """End the attempt if its input, made of its dependencies' outputs, is too large to
        hand in; whether it did."""
        error = dependencies.input_refused(self.job, self.context.settings.input_limits())
        if error is None:
            return False
        too_large = FailureReason.INPUT_TOO_LARGE
        self._finish(attempts.AttemptResult(error=error, retryable=False, reason=too_large))
        return True

    def _record_running(self, container_id: str) -> bool:
        """Commit the container's id and ``running``; False (its container removed) when the
        attempt is no longer this runner's."""
        with self.context.db.transaction() as session:
            held = attempts.mark_running(
                session, self.context.hub, self.job_id, self.context.name, self.number, container_id
            )
        if not held:
            self._engine.stop(container_id, 0)
            self._remove()
            return False
        self._crash_point("running_recorded")
        return True

    def _crash_point(self, point: crash_points.CrashPoint) -> None:
        crash_points.reach(self.context.settings.test_crash_point, point)

    def _create(self) -> str:
        """Create the container with the job's input at ``INPUT_PATH``: in a mounted directory
        of the runner's when the engine shares its disk, else copied in."""
        settings = self.context.settings
        run_dirs = self.context.run_dirs
        name = container_name(self.job)
        input_data = json.dumps(self.job.input).encode()
        try:
            mounting = run_dirs.worth_mounting(self._engine.may_share_files)
        except ContainerFailure:
            mounting = False  # Asked again at the next attempt; this one copies.
        directory = self._make_run_dir(name, input_data) if mounting else None
        if directory is not None:
            spec = container_spec(
                self.job,
                self._secrets,
                self.context.name,
                settings,
                self.context.installation,
                directory,
                self._volumes,
            )
            try:
                return self._engine.create(spec)
            except MountSourceMissing:
                if run_dirs.not_shared():
                    logger.info(
                        "the Docker engine does not see this runner's files; copying each "
                        "job's input and output instead of mounting them",
                        extra={"action": "run_dir_not_shared", "job_id": self.job_id},
                    )
            finally:
                if not run_dirs.shared:
                    run_dirs.remove(name)
        container_id = self._engine.create(
            container_spec(
                self.job,
                self._secrets,
                self.context.name,
                settings,
                self.context.installation,
                volumes=self._volumes,
            )
        )
        self.container_id = container_id
        self._engine.put_file(container_id, INPUT_PATH, input_data)
        return container_id

    def _make_run_dir(self, name: str, input_data: bytes) -> str | None:
        """The attempt's directory holding its input; None if the runner's disk refuses it."""
        try:
            return str(self.context.run_dirs.create(name, input_data))
        except OSError as exc:
            logger.warning(
                "could not make the attempt's directory (%s); copying its input instead",
                exc,
                extra={"action": "run_dir_failed", "job_id": self.job_id},
            )
            self.context.run_dirs.remove(name)
            return None

    def _remove_quietly(self) -> None:
        try:
            self._remove()
        except EngineUnavailable:
            pass

    def _resume(self) -> None:
        """Adopt the attempt after a restart: keep supervising, or collect what happened."""
        if self.container_id is None:
            self._resume_unrecorded()
            return
        if self._engine.state(self.container_id) is None:
            self._finish(
                attempts.AttemptResult(
                    error="the container disappeared while the runner was away",
                    interrupted=FailureReason.CONTAINER_VANISHED,
                )
            )
            return
        resumed = resumption(self.context, self.job)
        self._supervise(since=resumed.since, started=resumed.started, stored=resumed.stored)

    def _resume_unrecorded(self) -> None:
        """Adopt an attempt whose container id was never recorded (the runner stopped between
        the claim and that record). Its container, if it made one, carries its labels: one
        that started (running or exited) is adopted and collected as after any crash; one
        that never started is removed, and the attempt given back without counting."""
        started = started_container(self.context, self.job)
        if started is None:
            self.context.run_dirs.remove(container_name(self.job))
            self._requeue("the runner restarted before the container started")
            return
        self.container_id = started.id
        logger.info(
            "adopting container %s, started before the runner stopped",
            started.id[:12],
            extra={"action": "container_adopted", "job_id": self.job_id},
        )
        if self._record_running(started.id):
            started_at = started.started_at or utcnow()
            elapsed = (utcnow() - started_at).total_seconds()
            self._supervise(since=None, started=time.monotonic() - elapsed)

    def _supervise(self, since: int | None, started: float, stored: int = 0) -> None:
        """Supervise the container until it exits, then record the outcome and remove it.

        ``since``: Docker's time (ns) to read the output from (an adopted attempt's resume
        point); ``stored``: bytes of its log stored before.
        """
        assert self.container_id is not None
        container_id = self.container_id
        supervisor = Supervisor(
            self.context,
            self.job,
            container_id,
            self._secrets.values(),
            cancel=self._cancel,
            detach=self._detach,
            abandon=self._abandon,
        )
        exited = supervisor.run(since, started, stored)
        if exited is None:
            # Detached or abandoned: nothing to record (a restarted runner adopts a detached one).
            return
        result = collect(
            self.context,
            self.job,
            container_id,
            exited,
            cancel=self._cancel,
            secrets=self._secrets.values(),
        )
        self._crash_point("output_read")
        self._finish(result)
        self._crash_point("outcome_recorded")
        # The outcome is recorded: the next job need not wait for an exited container's removal.
        self._release()
        self._remove()
        self._crash_point("removed")

    def _store_logs(self, pump: LogPump, budget: LogBudget, *, ending: bool) -> bool:
        """Store what the pump gathered, as far as the budget allows; ``ending``: the tail too.
        True if the pump had gathered anything."""
        return store_logs(self.context, self.job_id, self.number, pump, budget, ending=ending)
