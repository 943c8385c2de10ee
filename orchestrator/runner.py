"""The runner: claims queued jobs and runs each attempt as a container on one Docker engine.

The claim loop wakes on submits, cancels and freed slots (``notify``), with a slow poll as a
fallback, and never exceeds its capacity. Each attempt runs in its own thread (``attempt.py``).
On start the runner adopts the attempts it held before a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from orchestrator import jobs
from orchestrator.attempt import Attempt
from orchestrator.config import Settings
from orchestrator.db import Database
from orchestrator.docker_engine import DockerEngine
from orchestrator.errors import EngineUnavailable
from orchestrator.models import utcnow
from orchestrator.notify import CANCEL, WORK, Hub
from orchestrator.policy import ContainerPolicy
from orchestrator.secrets import SecretBox

logger = logging.getLogger(__name__)


@dataclass
class RunnerStatus:
    """What the runner reports about itself (for /healthz)."""

    state: str
    docker: str
    docker_error: str | None
    docker_unavailable_since: datetime | None
    running: int


class Runner:
    """Claims jobs and supervises their attempts, up to ``capacity`` at a time."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        engine: DockerEngine,
        hub: Hub,
        box: SecretBox,
        policy: ContainerPolicy,
        *,
        name: str | None = None,
        capacity: int | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.hub = hub
        self.box = box
        self.policy = policy
        self.name = name or settings.runner_name
        self.capacity = capacity or settings.runner_capacity
        self._attempts: dict[str, Attempt] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._topic = f"runner:{self.name}"
        self._engine_ok = False
        self._engine_error: str | None = "not checked yet"
        self._engine_down_since: datetime | None = utcnow()
        self._adopted = False
        self._thread: threading.Thread | None = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Run the claim loop in a background thread."""
        self._thread = threading.Thread(target=self.run, name=f"runner-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming and return; running containers are left to be adopted on restart."""
        self._stop.set()
        self.hub.publish(self._topic)
        with self._lock:
            attempts = list(self._attempts.values())
        for attempt in attempts:
            attempt.detach()
        if self._thread is not None:
            self._thread.join(timeout)
        for attempt in attempts:
            attempt.join(timeout)

    def status(self) -> RunnerStatus:
        """The runner's state, its engine's health and how many attempts it runs."""
        with self._lock:
            running = len(self._attempts)
        if self._stop.is_set():
            state = "stopped"
        elif not self._engine_ok:
            state = "waiting_for_engine"
        else:
            state = "active"
        return RunnerStatus(
            state=state,
            docker="ok" if self._engine_ok else "unavailable",
            docker_error=None if self._engine_ok else self._engine_error,
            docker_unavailable_since=None if self._engine_ok else self._engine_down_since,
            running=running,
        )

    def run(self) -> None:
        """The claim loop: run_once, then wait for a wake-up, the next due time or the poll."""
        while not self._stop.is_set():
            versions = {t: self.hub.version(t) for t in (WORK, CANCEL, self._topic)}
            try:
                self.run_once()
                timeout = self._next_wait()
            except Exception:
                logger.exception("runner loop failed; retrying", extra={"action": "runner_error"})
                timeout = self.settings.engine_retry_interval
            if not self._stop.is_set():
                self.hub.wait(versions, timeout)

    def _next_wait(self) -> float:
        if not self._engine_ok:
            return self.settings.engine_retry_interval
        with self.db.read() as session:
            due = jobs.next_due(session)
        timeout = self.settings.poll_interval
        if due is not None:
            timeout = min(timeout, max((due - utcnow()).total_seconds(), 0.01))
        return timeout

    # --- one pass -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Check the engine, adopt, queue due jobs, pass on cancels, claim; how many claimed."""
        if not self._check_engine():
            return 0
        if not self._adopted:
            self._adopt()
            self._adopted = True
        with self.db.read() as session:
            due = jobs.scheduled_due(session)
        if due:
            with self.db.transaction() as session:
                jobs.promote_due(session, self.hub)
        self._deliver_cancels()
        claimed = 0
        while not self._stop.is_set() and self._free_slots() > 0:
            with self.db.transaction() as session:
                job = jobs.claim(session, self.name, self.hub)
            if job is None:
                break
            claimed += 1
            self._launch(Attempt.for_claimed(self, job))
        return claimed

    def _check_engine(self) -> bool:
        try:
            self.engine.ping()
        except EngineUnavailable as exc:
            if self._engine_ok or self._engine_error != exc.message:
                logger.warning(
                    "Docker engine unavailable: %s",
                    exc.message,
                    extra={"action": "engine_unavailable"},
                )
            self.engine_lost(exc.message)
            return False
        if not self._engine_ok:
            logger.info("Docker engine available", extra={"action": "engine_available"})
        self._engine_ok = True
        self._engine_error = None
        self._engine_down_since = None
        return True

    def engine_lost(self, message: str) -> None:
        """Called when the engine does not answer: stop claiming until it is back."""
        if self._engine_ok or self._engine_down_since is None:
            self._engine_down_since = utcnow()
        self._engine_ok = False
        self._engine_error = message

    def _free_slots(self) -> int:
        with self._lock:
            return self.capacity - len(self._attempts)

    def _launch(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.job_id] = attempt
        attempt.start(on_done=self._attempt_done)

    def _attempt_done(self, attempt: Attempt) -> None:
        with self._lock:
            if self._attempts.get(attempt.job_id) is attempt:
                del self._attempts[attempt.job_id]
        self.hub.publish(self._topic)

    def _deliver_cancels(self) -> None:
        with self.db.read() as session:
            wanted = jobs.cancel_requested(session, self.name)
        with self._lock:
            targets = [self._attempts[j] for j in wanted if j in self._attempts]
        for attempt in targets:
            attempt.cancel()

    def _adopt(self) -> None:
        """Pick up the attempts this runner held before it stopped."""
        with self.db.read() as session:
            held = jobs.held_by(session, self.name)
        for job in held:
            if job.id in self._attempts:
                continue
            logger.info(
                "adopting job %s attempt %s", job.id, job.attempt, extra={"action": "job_adopted"}
            )
            self._launch(Attempt.for_adopted(self, job))

    # --- tests and the CLI ----------------------------------------------------------------

    def run_until_idle(self, timeout: float = 60.0) -> None:
        """Claim and run until nothing is runnable and no attempt is left (burst mode)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            claimed = self.run_once()
            with self._lock:
                attempts = list(self._attempts.values())
            if not claimed and not attempts:
                return
            for attempt in attempts:
                attempt.join(max(deadline - time.monotonic(), 0))
        raise TimeoutError(f"runner not idle after {timeout} s")
