"""Supervising an attempt's running container until it exits, and storing the attempt's log.

Supervision runs on the attempt's own thread: it stores log batches, enforces the timeout and
carries out a cancel (SIGTERM, grace period, SIGKILL) while a helper thread waits for the exit
through engine outages. A detach (the runner is shutting down) or an abandon (the attempt is no
longer this runner's) ends it before the exit, with nothing to record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING

from orchestrator.docker.engine import DockerEngine
from orchestrator.errors import ContainerMissing, EngineUnavailable, OrchestratorError
from orchestrator.rules import crash_points
from orchestrator.runner.log_budget import LogBudget
from orchestrator.runner.log_pump import LogPump
from orchestrator.services import attempts
from orchestrator.services.containers import container_name
from orchestrator.storage.models import Job

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)

LOG_DRAIN_SECONDS = 5.0
# Characters of the log's end kept to find its last line, and of that line given to retry rules.
LAST_LINE_CHARS = 4096


@dataclass(frozen=True)
class Exited:
    """How a supervised container ended: its exit code (None if it vanished), whether the
    timeout stopped it, whether the engine stopped answering meanwhile, and its last log line
    (masked; None if it wrote none while this runner supervised it)."""

    exit_code: int | None
    timed_out: bool
    engine_lost: bool
    last_line: str | None = None


class LastLine:
    """The last non-blank line of the log text taken so far (the end of it, bounded), for
    retry rules matching on it."""

    def __init__(self) -> None:
        self._end = ""

    def feed(self, text: str) -> None:
        """Take in more of the log, in order."""
        if text:
            self._end = (self._end + text)[-LAST_LINE_CHARS:]

    @property
    def line(self) -> str | None:
        """The last non-blank line, without its line break; None if there is none."""
        for line in reversed(self._end.splitlines()):
            if line.strip():
                return line
        return None


def store_logs(
    context: AttemptContext,
    job_id: str,
    number: int,
    pump: LogPump,
    budget: LogBudget,
    *,
    ending: bool,
    last_line: LastLine | None = None,
) -> bool:
    """Store what the pump gathered, as far as the budget allows; ``ending``: the tail too.

    Each batch carries the pump's resume point, where an adopting runner reads on from.
    ``last_line`` is fed all the text gathered, stored or cut. True if the pump had gathered
    anything.
    """
    runs = pump.take_runs()
    if last_line is not None:
        for _, text in runs:
            last_line.feed(text)
    texts = [stored for stream, text in runs for stored in budget.add_stream(stream, text)]
    if ending:
        texts += budget.flush_streams()
    if texts:
        resume = pump.resume_time
        # Text comes only from output read, which sets the resume point.
        assert resume is not None
        with context.db.transaction() as session:
            for stream, run in groupby(texts, key=lambda stored: stored[0]):
                attempts.append_logs(
                    session,
                    context.hub,
                    job_id,
                    number,
                    [(resume, text) for _, text in run],
                    stream=stream,
                )
    return bool(runs)


class Supervisor:
    """Supervises one attempt's container; ``cancel``, ``detach`` and ``abandon`` are the
    attempt's requests, seen as soon as they are made."""

    def __init__(
        self,
        context: AttemptContext,
        job: Job,
        container_id: str,
        secrets: Iterable[str],
        *,
        cancel: threading.Event,
        detach: threading.Event,
        abandon: threading.Event,
    ) -> None:
        self.context = context
        self.job = job
        self.job_id = job.id
        self.number = job.attempt
        self.container_id = container_id
        self._secrets = secrets
        self._cancel = cancel
        self._detach = detach
        self._abandon = abandon
        # Set when the engine stopped answering during the attempt: a container killed by the
        # engine's restart is an interruption, not the job's failure.
        self.engine_lost = False
        self._last_line = LastLine()

    @property
    def _engine(self) -> DockerEngine:
        return self.context.engine

    def run(self, since: int | None, started: float, stored: int = 0) -> Exited | None:
        """Store logs, enforce the timeout and carry out a cancel until the container exits;
        None if the attempt was detached or abandoned first.

        ``since``: Docker's time (ns) to read the output from (an adopted attempt's resume
        point); ``started``: the attempt's start on the monotonic clock; ``stored``: bytes of
        its log stored before.
        """
        container_id = self.container_id
        exit_codes: list[int | None] = []
        waiter = threading.Thread(
            target=lambda: exit_codes.append(self._wait_for_exit(container_id)), daemon=True
        )
        waiter.start()
        pump = LogPump(partial(self._engine.logs, container_id), self._secrets, since)
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
                    return None
                detaching = self._detach.is_set()
                # Leaving the container to a restarted runner: store the tail held in memory
                # now, as the only copy of that output we can count on (Docker's log may be
                # rotated, and if no runner adopts the attempt this is its whole log). The
                # adopter reads on from the pump's resume point, stored with this batch, and
                # stores its own tail later, so each restart while cutting may add one more
                # tail (half the budget) to the attempt's log.
                self._store_logs(pump, budget, ending=detaching)
                if detaching:
                    return None
                if not stopping and self._cancel.is_set():
                    stopping = True
                    self._stop_container(container_id)
                if not stopping and timeout is not None and time.monotonic() - started > timeout:
                    timed_out = stopping = True
                    self._stop_container(container_id)
            pump.container_exited()
            crash_points.reach(self.context.settings.test_crash_point, "exit_seen")
            self._drain(pump, budget)
        finally:
            pump.stop()
        exit_code = exit_codes[0] if exit_codes else None
        return Exited(
            exit_code=exit_code,
            timed_out=timed_out,
            engine_lost=self.engine_lost,
            last_line=self._last_line.line,
        )

    def _store_logs(self, pump: LogPump, budget: LogBudget, *, ending: bool) -> bool:
        return store_logs(
            self.context,
            self.job_id,
            self.number,
            pump,
            budget,
            ending=ending,
            last_line=self._last_line,
        )

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
                self.engine_lost = True
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

    def _stop_container(self, container_id: str) -> None:
        grace = self.context.settings.stop_grace_period

        def stop() -> None:
            try:
                self._engine.stop(container_id, grace)
            except OrchestratorError as exc:
                logger.warning("stop failed: %s", exc.message, extra={"job_id": self.job_id})

        threading.Thread(target=stop, name=f"stop-{self.job_id}", daemon=True).start()
