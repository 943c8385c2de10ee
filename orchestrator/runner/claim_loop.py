"""The runner: claims queued jobs and runs each attempt as a container on one Docker engine.

The claim loop wakes on submits, cancels and freed slots (``notify``), with a slow poll as a
fallback, and never exceeds its capacity. Each attempt runs in its own thread (``attempt.py``).
Before it claims anything (at start, and again when its engine comes back after an outage) the
runner reconciles its engine with the database: it adopts the attempts it holds and removes its
containers that no attempt holds. A heartbeat thread renews its lease (``runners``), takes back
the jobs of lost runners, and abandons attempts another runner has taken back from it. Jobs
of HTTP worker definitions are served by the runner's worker pools (``workers``) instead.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime

from orchestrator import __version__
from orchestrator.config import Settings
from orchestrator.docker.engine import DockerEngine
from orchestrator.rules import crash_points
from orchestrator.rules.containers import attempt_name
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.rules.runner_states import RunnerProcessState, RunnerState
from orchestrator.runner.attempt import Attempt
from orchestrator.runner.context import AttemptContext
from orchestrator.runner.engine_health import EngineHealth
from orchestrator.runner.reconcile import remove_idle_networks, remove_strays
from orchestrator.runner.registration import Registration
from orchestrator.runner.run_dirs import RunDirs
from orchestrator.runner.tes_attempt import TaskAttempt, is_task_job
from orchestrator.runner.tes_files import TesFileSettings
from orchestrator.runner.worker_attempt import WorkerAttempt, is_worker_job
from orchestrator.runner.worker_pools import REAP_INTERVAL, WorkerPools
from orchestrator.services import attempts, runners
from orchestrator.storage.db import Database
from orchestrator.storage.models import Job, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop
from orchestrator.wakeups.topics import CANCEL, WORK, control_topic, runner_topic

# How often a runner looks for idle project networks (at its first healthy heartbeat, then at
# this pace): networks change at the pace of projects, not of jobs.
IDLE_NETWORK_INTERVAL = 300.0
# The claim passes' least interval (s): a submit wakes an idle runner at once, but a burst of
# submits wakes it once per interval, not once per submit (each pass is a few queries).
CLAIM_INTERVAL = 0.02

logger = logging.getLogger(__name__)


@dataclass
class RunnerStatus:
    """What the runner reports about itself (for /healthz)."""

    # A ``RunnerProcessState``, kept a plain str: /healthz reports ``disabled`` in its place
    # for a process without a runner.
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
        installation: str,
        name: str | None = None,
        capacity: int | None = None,
        queues: list[str] | None = None,
        tes_files: TesFileSettings,
    ) -> None:
        self.settings = settings
        self.db = db
        self.engine = engine
        self.hub = hub
        self.box = box
        self.policy = policy
        self.installation = installation
        self.name = name or settings.resolved_runner_name()
        self.capacity = capacity or settings.runner_capacity
        self.queues = queues if queues is not None else (settings.runner_queues or None)
        self.identity = runners.Identity(
            name=self.name,
            session=str(uuid.uuid4()),
            docker_host=settings.docker_host or "default (DOCKER_HOST or the local socket)",
            capacity=self.capacity,
            queues=self.queues,
            version=__version__,
        )
        self.done = threading.Event()
        self._attempts: dict[str, Attempt] = {}
        # Attempts whose outcome is recorded and whose container is still being removed.
        self._removing: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._draining = threading.Event()
        self._drain_deadline = 0.0
        self.registration = Registration(settings, db, hub, self.identity)
        self._topic = runner_topic(self.name)
        self.health = EngineHealth(
            engine,
            settings.engine_retry_interval,
            lambda: self.hub.publish(control_topic(self.name)),
        )
        self._reconciled = False
        # (CANCEL version, monotonic time) of the last read of requested cancels.
        self._cancels_read: tuple[int, float] | None = None
        self._networks_looked_at: float | None = None
        self.run_dirs = RunDirs(
            settings.data_dir, installation, enabled=settings.run_dir_mount == "auto"
        )
        # HTTP worker containers of this process; removed when it stops.
        self.workers = WorkerPools(engine, db, self.name, self.identity.session, installation)
        self.context = AttemptContext(
            settings=settings,
            db=db,
            hub=hub,
            box=box,
            policy=policy,
            engine=engine,
            name=self.name,
            installation=installation,
            run_dirs=self.run_dirs,
            workers=self.workers,
            engine_lost=self.engine_lost,
            tes_files=tes_files,
        )
        self.claims = Loop(
            name="runner",
            thread_name=f"runner-{self.name}",
            hub=hub,
            run_once=self.run_once,
            next_wait=self._wait_after_pass,
            failure_wait=lambda: self.settings.engine_retry_interval,
            failed="runner loop failed; retrying",
            action="runner_error",
            topics=lambda: (WORK, CANCEL, self._topic),
            finished=lambda: self._stop.is_set() or self._drained(),
            on_exit=self._leave,
            min_interval=CLAIM_INTERVAL,
        )
        self.heartbeat = Loop(
            name="heartbeat",
            thread_name=f"heartbeat-{self.name}",
            hub=hub,
            run_once=self._beat_when_registered,
            next_wait=lambda: self.settings.heartbeat_interval,
            failure_wait=lambda: self.settings.heartbeat_interval,
            failed="heartbeat failed; retrying",
            action="heartbeat_error",
            topics=lambda: (control_topic(self.name),),
            finished=self._stop.is_set,
            # A runner without a heartbeat would be taken for lost while it runs jobs.
            on_death=lambda _exc: self._stop_claiming(),
        )
        self.reaper = Loop(
            name="worker-reaper",
            thread_name=f"workers-{self.name}",
            hub=hub,
            run_once=self.workers.run_once,
            next_wait=lambda: REAP_INTERVAL,
            failure_wait=lambda: REAP_INTERVAL,
            failed="worker reaper failed",
            action="worker_reaper_error",
            topics=lambda: (control_topic(self.name),),
            finished=self._stop.is_set,
        )

    # --- life cycle -----------------------------------------------------------------------

    @property
    def loops(self) -> tuple[Loop, ...]:
        """The runner's background loops: claims, heartbeat and the idle worker reaper."""
        return (self.claims, self.heartbeat, self.reaper)

    def start(self) -> None:
        """Run the claim loop, the heartbeat and the worker reaper in background threads."""
        for loop in self.loops:
            loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming and return; running containers are left to be adopted on restart
        (worker containers are removed, their jobs given back: see ``worker_attempt``)."""
        self._stop_claiming()
        for loop in self.loops:
            loop.stop(timeout)
        with self._lock:
            removing = list(self._removing)
        for attempt in removing:
            attempt.join(timeout)

    def _stop_claiming(self) -> None:
        self._stop.set()
        self.hub.publish(self._topic, control_topic(self.name))

    def drain(self, timeout: float | None = None) -> None:
        """Stop claiming; let running attempts finish for up to ``timeout`` (default: the
        drain timeout setting), then stop, leaving what still runs to adoption or recovery."""
        with self._lock:
            if self._draining.is_set():
                return
            wait = self.settings.drain_timeout if timeout is None else timeout
            self._drain_deadline = time.monotonic() + wait
            self._draining.set()
        logger.info(
            "draining: no new jobs; waiting up to %g s for %d running",
            wait,
            len(self._attempts),
            extra={"action": "runner_draining"},
        )
        self.registration.write_state(RunnerState.DRAINING)
        self.hub.publish(self._topic)

    def status(self) -> RunnerStatus:
        """The runner's state, its engine's health and how many attempts it runs."""
        with self._lock:
            running = len(self._attempts)
        if self._stop.is_set() or self.done.is_set():
            # Stopped means stopped: no loop of it runs, its registry row is written.
            alive = any(loop.alive for loop in self.loops)
            state = RunnerProcessState.STOPPING if alive else RunnerProcessState.STOPPED
        elif self._draining.is_set():
            state = RunnerProcessState.DRAINING
        elif self.registration.name_conflict is not None:
            state = RunnerProcessState.WAITING_FOR_NAME
        elif not self.health.ok:
            state = RunnerProcessState.WAITING_FOR_ENGINE
        else:
            state = RunnerProcessState.ACTIVE
        return RunnerStatus(
            state=state,
            docker="ok" if self.health.ok else "unavailable",
            docker_error=None if self.health.ok else self.health.error,
            docker_unavailable_since=None if self.health.ok else self.health.down_since,
            running=running,
        )

    def _wait_after_pass(self) -> float:
        timeout = self._next_wait()
        if self._draining.is_set():
            timeout = min(timeout, max(self._drain_deadline - time.monotonic(), 0.01))
        return timeout

    def _drained(self) -> bool:
        """Whether a drain is over: nothing runs any more, or its deadline has passed."""
        if not self._draining.is_set():
            return False
        with self._lock:
            running = len(self._attempts)
        if running and time.monotonic() < self._drain_deadline:
            return False
        if running:
            logger.warning(
                "drain deadline passed; leaving %d running jobs to adoption or recovery",
                running,
                extra={"action": "runner_drain_deadline"},
            )
        return True

    def _leave(self) -> None:
        """Detach from what still runs (its containers keep running) and say so."""
        self._stop.set()
        self.hub.publish(control_topic(self.name))
        with self._lock:
            ours = list(self._attempts.values())
        for attempt in ours:
            attempt.detach()
        for attempt in ours:
            attempt.join(10.0)
        # Worker containers do not outlive their runner process (their jobs were given back).
        self.workers.close()
        if self.registration.registered.is_set():
            self.registration.write_state(RunnerState.STOPPED)
        logger.info(
            "runner stopped; %d running jobs left for adoption",
            len(ours),
            extra={"action": "runner_stopped"},
        )
        self.done.set()

    def _next_wait(self) -> float:
        if not self.registration.registered.is_set():
            return self.settings.heartbeat_interval
        if not self.health.ok:
            return self.health.retry_wait()
        with self.db.read() as session:
            due = attempts.next_due(session)
        timeout = self.settings.poll_interval
        if due is not None:
            timeout = min(timeout, max((due - utcnow()).total_seconds(), 0.01))
        return timeout

    # --- registration and heartbeat -------------------------------------------------------

    def _beat_when_registered(self) -> None:
        if self.registration.registered.is_set():
            self.beat()

    def beat(self) -> None:
        """Renew the lease, take back lost runners' jobs, and let go of attempts that are no
        longer this runner's."""
        state = self.registration.renew(self.health)
        if state is None:
            self._stop_claiming()
            return
        if state == RunnerState.DRAINING and not self._draining.is_set():
            self.drain()
        self.registration.take_back_lost()
        self._let_go()
        if self.health.ok and self._reconciled:
            self._remove_strays()
            self._remove_idle_networks()

    def _let_go(self) -> None:
        """Abandon the attempts this runner no longer holds (taken back while it was lost)."""
        with self._lock:
            ours = list(self._attempts.values())
        if not ours:
            return
        with self.db.read() as session:
            held = {(job.id, job.attempt) for job in attempts.held_by(session, self.name)}
        for attempt in ours:
            if (attempt.job_id, attempt.number) not in held:
                attempt.abandon()

    # --- one pass -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Register, check the engine, reconcile, queue due jobs, pass on cancels, claim; how
        many were claimed."""
        if not self.registration.registered.is_set() and not self.registration.register():
            return 0
        if not self._check_engine():
            return 0
        if not self._reconciled:
            self._reconcile()
            self._reconciled = True
        with self.db.read() as session:
            due = attempts.scheduled_due(session)
        if due:
            with self.db.transaction() as session:
                attempts.promote_due(session, self.hub)
        self._deliver_cancels()
        claimed = 0
        while not self._stop.is_set() and not self._draining.is_set() and self._free_slots() > 0:
            with self.db.transaction() as session:
                job = attempts.claim(session, self.name, self.hub, self.queues)
            if job is None:
                break
            claimed += 1
            crash_points.reach(self.settings.test_crash_point, "claimed")
            self._launch(self._attempt(job, adopted=False))
        return claimed

    def _check_engine(self) -> bool:
        ok, came_back = self.health.check()
        if came_back:
            # What ran, ended or vanished while the engine was away is looked at again.
            self._reconciled = False
        return ok

    def engine_lost(self, message: str) -> None:
        """Called when the engine does not answer: stop claiming until it is back."""
        self.health.lost(message)

    def _free_slots(self) -> int:
        with self._lock:
            return self.capacity - len(self._attempts)

    def _attempt(self, job: Job, *, adopted: bool) -> Attempt:
        """The attempt of a claimed or adopted job: its own container, or a worker's."""
        kind: type[Attempt] = Attempt
        if is_task_job(job):
            kind = TaskAttempt
        elif is_worker_job(job.container):
            kind = WorkerAttempt
        return (
            kind.for_adopted(self.context, job) if adopted else kind.for_claimed(self.context, job)
        )

    def _launch(self, attempt: Attempt) -> None:
        with self._lock:
            self._attempts[attempt.job_id] = attempt
        attempt.start(on_done=self._attempt_done)

    def _attempt_done(self, attempt: Attempt) -> None:
        with self._lock:
            if self._attempts.get(attempt.job_id) is attempt:
                del self._attempts[attempt.job_id]
            self._removing = [a for a in self._removing if a.alive]
            self._removing.append(attempt)
        if attempt.unrecorded:
            self._reconciled = False
        self.hub.publish(self._topic)

    def _deliver_cancels(self) -> None:
        """Stop the attempts whose cancel was requested. Read when a cancel was published
        since the last read (here, or through the relay), and at least every poll interval
        (a cancel made by another process without a relay, on SQLite)."""
        version, now = self.hub.version(CANCEL), time.monotonic()
        last = self._cancels_read
        if last is not None and last[0] == version and now - last[1] < self.settings.poll_interval:
            return
        # The version is taken before the read: a cancel committed during it is read next pass.
        self._cancels_read = (version, now)
        with self.db.read() as session:
            wanted = attempts.cancel_requested(session, self.name)
        with self._lock:
            targets = [self._attempts[j] for j in wanted if j in self._attempts]
        for attempt in targets:
            attempt.cancel()

    def _reconcile(self) -> None:
        """Make the engine and the database agree before claiming: remove the installation's
        containers no attempt holds, and adopt the attempts this runner holds."""
        self._remove_strays()
        self.workers.remove_leftovers()
        # Listed before the database is read: a directory made after that read belongs to a
        # claim committed before it, which the read sees.
        directories = self.run_dirs.names()
        with self.db.read() as session:
            held = attempts.held_by(session, self.name)
            active = attempts.active_attempts(session)
        with self._lock:
            running = {(attempt.job_id, attempt.number) for attempt in self._attempts.values()}
        # Directories are the installation's, shared by its runners on this disk.
        keep = {attempt_name(*key) for key in active | running}
        self.run_dirs.sweep(directories - keep)
        for job in held:
            if job.id in self._attempts:
                continue
            logger.info(
                "adopting job %s attempt %s", job.id, job.attempt, extra={"action": "job_adopted"}
            )
            self._launch(self._attempt(job, adopted=True))

    def _remove_strays(self) -> None:
        """Remove the installation's containers whose attempt nobody holds (``reconcile``)."""
        remove_strays(self.context, self._running_keys)

    def _remove_idle_networks(self) -> None:
        """Remove idle project networks (``reconcile``), at most every IDLE_NETWORK_INTERVAL."""
        now = time.monotonic()
        last = self._networks_looked_at
        if last is not None and now - last < IDLE_NETWORK_INTERVAL:
            return
        self._networks_looked_at = now
        remove_idle_networks(self.context)

    def _running_keys(self) -> set[tuple[str, int]]:
        """(job id, attempt) of the attempts this process runs or is still removing."""
        with self._lock:
            ours = [*self._attempts.values(), *(a for a in self._removing if a.alive)]
        return {(a.job_id, a.number) for a in ours}
