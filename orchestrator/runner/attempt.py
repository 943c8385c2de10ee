"""One attempt of one job: create, put the input in, start, supervise, collect, remove.

Supervision runs on the attempt's own thread: it stores log batches, enforces the timeout and
carries out a cancel (SIGTERM, grace period, SIGKILL) while a helper thread waits for the exit.
State changes go through ``jobs``; the container is removed only after the outcome is committed.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from orchestrator.docker.engine import DockerEngine
from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX, ContainerState
from orchestrator.errors import (
    ContainerFailure,
    ContainerMissing,
    EngineUnavailable,
    ImageUnavailable,
    MountSourceMissing,
    OrchestratorError,
    PolicyRefused,
)
from orchestrator.rules import crash_points
from orchestrator.rules.masking import mask
from orchestrator.runner.container_spec import container_name, container_spec, parse_output
from orchestrator.runner.log_budget import LogBudget
from orchestrator.runner.log_pump import LogPump, resume_since
from orchestrator.runner.run_dirs import INPUT_PATH, OUTPUT_PATH
from orchestrator.services import attempts, jobs
from orchestrator.storage.models import Job, utcnow

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)

LOG_DRAIN_SECONDS = 5.0
# Exit codes of a container killed by SIGKILL or SIGTERM.
SIGNAL_EXIT_CODES = frozenset({137, 143})
# How long after such an exit an engine shutting down has stopped answering.
ENGINE_SHUTDOWN_WINDOW = 5.0


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
        # Set when the engine stopped answering during the attempt: a container killed by the
        # engine's restart is an interruption, not the job's failure.
        self._engine_lost = False
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
            except Exception as exc:
                if not self.context.db.outage_seen(exc):
                    logger.exception(
                        "attempt crashed",
                        extra={"action": "attempt_crashed", "job_id": self.job_id},
                    )
                    self._give_up(exc)
                    return
                # The database did not answer: record nothing now; the runner adopts the
                # attempt again (its container is still there) once the database is back.
                logger.warning(
                    "could not record the attempt (%s); it will be adopted again",
                    type(exc).__name__,
                    extra={"action": "attempt_unrecorded", "job_id": self.job_id},
                )
                self.unrecorded = True
            finally:
                self._release()

        self._thread = threading.Thread(target=target, name=f"job-{self.job_id}", daemon=True)
        self._thread.start()

    def _give_up(self, exc: Exception) -> None:
        """After an unexpected error: end the attempt as failed rather than leave it running."""
        error = f"the runner failed while running this attempt ({type(exc).__name__}); see its log"
        try:
            self._finish(attempts.AttemptResult(error=error))
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
            self._finish(attempts.AttemptResult(error=exc.message, retryable=False))
            self._remove()
            return
        if self.adopted:
            self._resume()
            return
        try:
            # This runner's policy may be stricter than the one that accepted the job.
            self._volumes = self.context.policy.resolve_for_runner(self.job.container)["volumes"]
        except PolicyRefused as exc:
            error = f"this runner's container policy refuses the job: {exc.message}"
            self._finish(attempts.AttemptResult(error=error, retryable=False))
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
            self._finish(attempts.AttemptResult(error=message, retryable=False))
            return
        if self._record_running(self.container_id):
            self._supervise(since=None, started=time.monotonic())

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
                    interrupted="container_vanished",
                )
            )
            return
        with self.context.db.read() as session:
            resume = attempts.last_log_time(session, self.job_id, self.number)
        started = time.monotonic()
        if self.job.start_time is not None:
            started -= (utcnow() - self.job.start_time).total_seconds()
        self._supervise(
            since=resume_since(resume), started=started, stored=self._stored_log_bytes()
        )

    def _resume_unrecorded(self) -> None:
        """Adopt an attempt whose container id was never recorded (the runner stopped between
        the claim and that record). Its container, if it made one, carries its labels: one
        that started (running or exited) is adopted and collected as after any crash; one
        that never started is removed, and the attempt given back without counting."""
        labels = {
            f"{LABEL_PREFIX}job-id": self.job_id,
            f"{LABEL_PREFIX}attempt": str(self.number),
        }
        started: ContainerState | None = None
        for container_id in self._engine.list_labelled(labels):
            state = self._engine.state(container_id)
            if state is None:
                continue
            if state.labels.get(INSTALLATION_LABEL, self.context.installation) != (
                self.context.installation
            ):
                continue
            if state.never_started or started is not None:
                self._engine.remove(container_id)
            else:
                started = state
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

    def _stored_log_bytes(self) -> int:
        """Bytes of this attempt's log stored already, so an adopted attempt keeps its budget."""
        total = after = 0
        with self.context.db.read() as session:
            while rows := jobs.logs(session, self.job_id, after, self.number):
                total += sum(len(row.text.encode()) for row in rows)
                assert rows[-1].id is not None
                after = rows[-1].id
        return total

    def _supervise(self, since: int | None, started: float, stored: int = 0) -> None:
        """Store logs, enforce the timeout and carry out a cancel until the container exits.

        ``since``: Docker's time (ns) to read the output from (an adopted attempt's resume
        point); ``stored``: bytes of its log stored before.
        """
        assert self.container_id is not None
        container_id = self.container_id
        exit_codes: list[int | None] = []
        waiter = threading.Thread(
            target=lambda: exit_codes.append(self._wait_for_exit(container_id)), daemon=True
        )
        waiter.start()
        pump = LogPump(partial(self._engine.logs, container_id), self._secrets.values(), since)
        pump.start()
        try:
            budget = LogBudget(self.context.settings.max_log_bytes, stored)
            timeout = self.job.timeout
            timed_out = stopping = False
            interval = self.context.settings.log_flush_interval
            while waiter.is_alive():
                waiter.join(interval)
                if self._abandon.is_set():
                    self._kill_abandoned(container_id)
                    return
                detaching = self._detach.is_set()
                # Leaving the container to a restarted runner: store the tail held in memory
                # now, as the only copy of that output we can count on (Docker's log may be
                # rotated, and if no runner adopts the attempt this is its whole log). The
                # adopter reads on from the pump's resume point, stored with this batch, and
                # stores its own tail later, so each restart while cutting may add one more
                # tail (half the budget) to the attempt's log.
                self._store_logs(pump, budget, ending=detaching)
                if detaching:
                    return
                if not stopping and self._cancel.is_set():
                    stopping = True
                    self._stop_container(container_id)
                if not stopping and timeout is not None and time.monotonic() - started > timeout:
                    timed_out = stopping = True
                    self._stop_container(container_id)
            pump.container_exited()
            self._crash_point("exit_seen")
            self._drain(pump, budget)
        finally:
            pump.stop()
        exit_code = exit_codes[0] if exit_codes else None
        result = self._collect(container_id, exit_code, timed_out)
        self._crash_point("output_read")
        self._finish(result)
        self._crash_point("outcome_recorded")
        # The outcome is recorded: the next job need not wait for an exited container's removal.
        self._release()
        self._remove()
        self._crash_point("removed")

    def _drain(self, pump: LogPump, budget: LogBudget) -> None:
        """Store the rest of the output once the container has exited, then the tail.

        The pump ends once it has read what Docker stored; it is given up on only after
        ``LOG_DRAIN_SECONDS`` without output, so a large backlog is stored whole.
        """
        interval = self.context.settings.log_flush_interval
        deadline = time.monotonic() + LOG_DRAIN_SECONDS
        while not pump.join(interval) and time.monotonic() < deadline:
            if self._store_logs(pump, budget, ending=False):
                deadline = time.monotonic() + LOG_DRAIN_SECONDS
        self._store_logs(pump, budget, ending=True)

    def _wait_for_exit(self, container_id: str) -> int | None:
        """The exit code; keeps trying through engine outages; None if the container vanished."""
        while not self._detach.is_set() and not self._abandon.is_set():
            try:
                return int(self._engine.wait(container_id))
            except ContainerMissing:
                return None
            except EngineUnavailable as exc:
                self._engine_lost = True
                self.context.engine_lost(exc.message)
                time.sleep(self.context.settings.engine_retry_interval)
        return None

    def _kill_abandoned(self, container_id: str) -> None:
        logger.warning(
            "attempt %s is no longer this runner's; removing its container",
            self.number,
            extra={"action": "attempt_abandoned", "job_id": self.job_id},
        )
        try:
            self._engine.remove(container_id)
        except OrchestratorError as exc:
            logger.warning("could not remove the container: %s", exc.message)
        self.context.run_dirs.remove(container_name(self.job))

    def _engine_goes_away(self) -> bool:
        """Whether the engine stops answering within ``ENGINE_SHUTDOWN_WINDOW`` seconds."""
        deadline = time.monotonic() + ENGINE_SHUTDOWN_WINDOW
        while time.monotonic() < deadline:
            try:
                self._engine.ping()
            except EngineUnavailable:
                return True
            time.sleep(0.2)
        return False

    def _stop_container(self, container_id: str) -> None:
        grace = self.context.settings.stop_grace_period

        def stop() -> None:
            try:
                self._engine.stop(container_id, grace)
            except OrchestratorError as exc:
                logger.warning("stop failed: %s", exc.message, extra={"job_id": self.job_id})

        threading.Thread(target=stop, name=f"stop-{self.job_id}", daemon=True).start()

    def _store_logs(self, pump: LogPump, budget: LogBudget, *, ending: bool) -> bool:
        """Store what the pump gathered, as far as the budget allows; ``ending``: the tail too.

        Each batch carries the pump's resume point, where an adopting runner reads on from.
        True if the pump had gathered anything.
        """
        taken = pump.take()
        texts = budget.add(taken)
        if ending:
            texts += budget.flush()
        if texts:
            resume = pump.resume_time
            # Text comes only from output read, which sets the resume point.
            assert resume is not None
            with self.context.db.transaction() as session:
                attempts.append_logs(
                    session,
                    self.context.hub,
                    self.job_id,
                    self.number,
                    [(resume, t) for t in texts],
                )
        return bool(taken)

    def _read_output(self, container_id: str) -> bytes | None:
        """The bytes at ``$ORCH_OUTPUT``: from the attempt's directory when it has one."""
        max_bytes = self.context.settings.max_output_bytes
        name = container_name(self.job)
        if self.context.run_dirs.path(name).is_dir():
            try:
                return self.context.run_dirs.read_output(name, max_bytes)
            except PermissionError:
                # Written by a user of the container's that the runner's user may not read.
                pass
        return self._engine.read_file(container_id, OUTPUT_PATH, max_bytes)

    def _collect(
        self, container_id: str, exit_code: int | None, timed_out: bool
    ) -> attempts.AttemptResult:
        """What the attempt came to, from its exit code, its output and the engine.

        A container removed or killed through the engine by someone else (``docker rm -f``,
        ``docker kill``, ``docker stop``) interrupts the attempt, as an engine restart does:
        the job gets a new attempt that does not count. Our own stops (a cancel, a timeout)
        are not interruptions, nor is a job that kills itself (no kill request reaches the
        engine then). The messages here are ours: they hold no secret value and are not
        masked (masking a short value would garble them).
        """
        stopped_by_us = timed_out or self._cancel.is_set()
        error = None
        output = None
        state: ContainerState | None = None
        vanished = exit_code is None
        try:
            raw = self._read_output(container_id)
            output, error = parse_output(raw, self._secrets.values())
            if exit_code != 0 and not vanished:
                state = self._engine.state(container_id)
                vanished = state is None
        except EngineUnavailable as exc:
            self._engine_lost = True
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
            self._engine_lost = self._engine_lost or self._engine_goes_away()
            if not self._engine_lost:
                # ``docker rm -f`` kills first: the container may have been on its way out.
                vanished = self._engine.state(container_id) is None
            if not (self._engine_lost or vanished) and state is not None:
                killed_by = self._kill_request(container_id, state)
        interrupted = None
        if vanished and not stopped_by_us:
            interrupted = "container_vanished"
            error = "the container was removed while it ran, not by this runner"
        elif self._engine_lost and exit_code != 0 and not stopped_by_us:
            interrupted = "engine_unavailable"
            self.context.engine_lost("the engine stopped answering as the container was killed")
            error = (
                f"the container exited with code {exit_code} while its Docker engine was "
                "unavailable (an engine restart stops its containers)"
            )
        elif killed_by is not None:
            interrupted = "container_killed"
            error = (
                f"the container was stopped from outside (signal {killed_by} sent through the "
                "Docker engine, not by this runner)"
            )
        elif timed_out:
            error = f"timed out after {self.job.timeout:g}s"
        elif oom_killed:
            error = "the container ran out of memory and was killed"
        elif error is None and exit_code != 0 and not self._cancel.is_set():
            error = f"the container exited with code {exit_code}"
        return attempts.AttemptResult(
            exit_code=exit_code,
            output=output,
            error=error,
            timed_out=timed_out,
            cancelled=self._cancel.is_set(),
            interrupted=interrupted,
        )

    def _kill_request(self, container_id: str, state: ContainerState) -> str | None:
        """The signal of a kill request the engine received for the container since it
        started (none of ours: we sent none), or None."""
        since = (state.started_at or utcnow()).timestamp() - 1
        try:
            signals = self._engine.kill_signals(container_id, since)
        except OrchestratorError as exc:
            logger.warning(
                "could not read the engine's events: %s",
                exc.message,
                extra={"action": "engine_events_failed", "job_id": self.job_id},
            )
            return None
        return signals[-1] if signals else None
