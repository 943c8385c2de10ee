"""One attempt of a GA4GH TES task: its executors run in order by ``tes_run``, each step
recorded for the task's logs as it comes.

The task is one of our jobs (``services.tes_tasks``): it is claimed, fenced, cancelled and
finished as any job. ``starting`` is TES's INITIALIZING (inputs staged); the job is marked
``running`` when its first executor starts. The outcome becomes the job's: ``complete``
succeeds, ``executor_error`` fails with the executor's exit code (reason ``exit_code``),
``system_error`` fails with the reason the problem gives, ``canceled`` is a cancel. A task's
executors cannot be adopted after a restart (their supervision went with the old process):
they are removed and the attempt counts as interrupted, so the task runs again.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from orchestrator.docker.log_stream import STDERR, STDOUT
from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX
from orchestrator.errors import ContainerFailure, EngineUnavailable, PolicyRefused
from orchestrator.rules.masking import mask
from orchestrator.rules.reasons import FailureReason
from orchestrator.runner.attempt import Attempt
from orchestrator.runner.tes_run import (
    ExecutorOutcome,
    TaskOutcome,
    remove_task_containers,
    run_task,
)
from orchestrator.schemas.tes import ExecutorLogRecord, OutputFileRecord
from orchestrator.services import attempts, tes_tasks
from orchestrator.services.containers import container_name, container_spec
from orchestrator.storage.models import Job, utcnow

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)

# Characters of the system logs quoted in a failed attempt's error.
ERROR_CHARS = 500


def is_task_job(job: Job) -> bool:
    """Whether ``job`` is a TES task, run by ``TaskAttempt``."""
    return tes_tasks.is_task(job)


class TaskAttempt(Attempt):
    """An attempt of a TES task: several containers in turn instead of one."""

    def __init__(self, context: AttemptContext, job: Job, *, adopted: bool) -> None:
        super().__init__(context, job, adopted=adopted)
        # Stops the running executor: a cancel, or the attempt taken back from this runner.
        self._stop_task = threading.Event()
        # Set when the claim turned out not to be this runner's any more.
        self._fenced = False
        # Bytes of the executors' tails stored as the job's log.
        self._logged = 0

    def cancel(self) -> None:
        """Stop the running executor and start no other; the task ends ``cancelled``."""
        super().cancel()
        self._stop_task.set()

    def abandon(self) -> None:
        """Stop the executors and record nothing (the attempt is no longer this runner's)."""
        super().abandon()
        self._stop_task.set()

    @property
    def _labels(self) -> dict[str, str]:
        """The labels of this attempt's executor containers that name it (as
        ``container_spec`` sets them)."""
        return {
            INSTALLATION_LABEL: self.context.installation,
            f"{LABEL_PREFIX}job-id": self.job_id,
            f"{LABEL_PREFIX}attempt": str(self.number),
        }

    def _run(self) -> None:
        if self.adopted:
            self._give_back()
            return
        try:
            # This runner's policy may be stricter than the one that accepted the task: every
            # executor's image is checked, not only the first's.
            for executor in self.job.container["tes"]["executors"]:
                self.context.policy.resolve_for_runner(
                    {**self.job.container, "image": executor["image"]}, timeout=self.job.timeout
                )
        except PolicyRefused as exc:
            error = f"this runner's container policy refuses the task: {exc.message}"
            refused = FailureReason.POLICY_REFUSED
            self._finish(attempts.AttemptResult(error=error, retryable=False, reason=refused))
            return
        run_dirs = self.context.run_dirs
        try:
            shared = run_dirs.worth_mounting(self._engine.may_share_files)
        except ContainerFailure:
            shared = False
        if not shared:
            error = (
                "a TES task's files are bind-mounted into its executors: this runner's Docker "
                "engine does not share its disk (or ORCH_RUN_DIR_MOUNT is off)"
            )
            failed = FailureReason.CREATE_FAILED
            self._finish(attempts.AttemptResult(error=error, retryable=False, reason=failed))
            return
        name = container_name(self.job)
        task_dir = run_dirs.path(name)
        task_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        with self.context.db.transaction() as session:
            tes_tasks.attempt_started(session, self.job_id, self.number, utcnow())
        spec = container_spec(
            self.job, {}, self.context.name, self.context.settings, self.context.installation
        )
        try:
            outcome = run_task(
                self._engine,
                self.job.container["tes"],
                task_dir=task_dir,
                names=name,
                labels=spec.labels,
                network=spec.network,
                user=spec.user,
                nano_cpus=int(spec.cpus * 1e9) if spec.cpus else None,
                memory_bytes=spec.memory,
                # Each project writes its outputs in its own folder of the output root.
                settings=replace(
                    self.context.tes_files,
                    output_root=self.context.tes_files.output_root / self.job.project,
                ),
                cancel=self._stop_task,
                on_executor_started=self._executor_started,
                on_executor_ended=self._executor_ended,
                stop_grace=self.context.settings.stop_grace_period,
                pids=spec.pids,
            )
        except EngineUnavailable as exc:
            self.context.engine_lost(exc.message)
            self._remove_executors()
            if not self._fenced and not self._abandon.is_set():
                self._requeue(exc.message)
            return
        if self._fenced or self._abandon.is_set():
            self._remove_executors()
            return
        self._finish_task(outcome)
        self._release()
        self._remove()

    def _executor_started(self, index: int, start_time: datetime) -> None:
        with self.context.db.transaction() as session:
            tes_tasks.executor_started(session, self.job_id, self.number, index, start_time)
        if index != 0:
            return
        # The task runs from its first executor's start: its container's name stands for it.
        self.container_id = f"{container_name(self.job)}-x0"
        with self.context.db.transaction() as session:
            held = attempts.mark_running(
                session,
                self.context.hub,
                self.job_id,
                self.context.name,
                self.number,
                self.container_id,
            )
        if not held:
            self._fenced = True
            self._stop_task.set()

    def _executor_ended(self, outcome: ExecutorOutcome) -> None:
        record = ExecutorLogRecord(
            index=outcome.index,
            start_time=outcome.start_time,
            end_time=outcome.end_time,
            exit_code=outcome.exit_code,
            stdout=mask(outcome.stdout, self._secrets.values()),
            stderr=mask(outcome.stderr, self._secrets.values()),
        )
        with self.context.db.transaction() as session:
            tes_tasks.executor_ended(session, self.job_id, self.number, record)
            self._log_tails(session, record)

    def _log_tails(self, session: Session, record: ExecutorLogRecord) -> None:
        """The executor's stdout and stderr tails as the job's log too (the native API and the
        console show it), each under a line naming the executor, within ORCH_MAX_LOG_BYTES."""
        end = record.end_time or utcnow()
        for stream, text in ((STDOUT, record.stdout), (STDERR, record.stderr)):
            if not text:
                continue
            heading = f"[executor {record.index} {'stdout' if stream == STDOUT else 'stderr'}]\n"
            size = len(heading.encode()) + len(text.encode())
            if self._logged + size > self.context.settings.max_log_bytes:
                return
            self._logged += size
            # The heading is the orchestrator's own text (no stream), the tail the executor's.
            for chunk, kind in ((heading, None), (text, stream)):
                attempts.append_logs(
                    session, self.context.hub, self.job_id, self.number, [(end, chunk)], kind
                )

    def _finish_task(self, outcome: TaskOutcome) -> None:
        """Record the attempt's end for the task's logs and the job's outcome, in one
        transaction."""
        logs = [mask(line, self._secrets.values()) for line in outcome.system_logs]
        outputs = [
            OutputFileRecord(url=output.url, path=output.path, size_bytes=output.size_bytes)
            for output in outcome.outputs
        ]
        result = _result(outcome, logs)
        with self.context.db.transaction() as session:
            job = attempts.held(session, self.job_id, self.context.name, self.number)
            # A cancel asked for before the outcome is recorded wins (the API answered it and
            # shows the task CANCELING): even over an executor that exited at that moment, and
            # even before this runner was told of it.
            if self._cancel.is_set() or (job is not None and job.cancel_requested):
                result = attempts.AttemptResult(cancelled=True)
            tes_tasks.attempt_ended(session, self.job_id, self.number, utcnow(), outputs, logs)
            attempts.finish(
                session,
                self.context.hub,
                self.job_id,
                self.context.name,
                self.number,
                result,
                self.context.settings.interruption_limit,
            )

    def _give_back(self) -> None:
        """After a restart: the executors' supervision went with the old process."""
        self._remove_executors()
        self.context.run_dirs.remove(container_name(self.job))
        self._not_adoptable(
            "the runner restarted before the task's first executor started",
            "the runner restarted while the task's executors ran",
        )

    def _remove_executors(self) -> None:
        try:
            remove_task_containers(self._engine, self._labels)
        except EngineUnavailable:
            pass

    def _remove(self) -> None:
        """The executors are removed as each one ends: only the task's directory is left."""
        self.context.run_dirs.remove(container_name(self.job))


def _result(outcome: TaskOutcome, system_logs: list[str]) -> attempts.AttemptResult:
    """The job's outcome for the task's."""
    problems = "; ".join(system_logs)[-ERROR_CHARS:] or None
    if outcome.state == "complete":
        return attempts.AttemptResult(exit_code=0)
    if outcome.state == "canceled":
        return attempts.AttemptResult(cancelled=True)
    if outcome.state == "executor_error":
        last = outcome.executors[-1]
        if last.exit_code is None:
            # It could not start (its command or workdir does not fit its image).
            return attempts.AttemptResult(
                error=problems, retryable=False, reason=FailureReason.CREATE_FAILED
            )
        error = f"executor {last.index} exited with {last.exit_code}"
        return attempts.AttemptResult(exit_code=last.exit_code, error=error, retryable=False)
    if outcome.outputs_failed:
        reason = FailureReason.OUTPUT_INVALID
    elif outcome.missing_image is not None:
        reason = FailureReason.IMAGE_MISSING
    else:
        reason = FailureReason.CREATE_FAILED  # an input not staged, or an executor not made
    return attempts.AttemptResult(
        error=problems or "the task failed outside its executors", retryable=False, reason=reason
    )
