"""Pools of HTTP worker containers (SaladCloud's execution model) kept by one runner.

A pool holds up to ``replicas`` long-running containers of one worker configuration: started
on demand, ready once they answer, lent to one job at a time, stopped after ``idle_timeout``
without work, replaced when one dies. The pool owns the containers and nothing else: it never
touches the database (``worker_attempt.py`` records what a job came to, through ``jobs``); it
reports each container's state through the callable it is given, with which ``WorkerPools``
records the runner's worker containers (what SaladCloud's API counts as instances).
Every container carries the installation, the runner's name and its process session in its
labels, so a restarted runner removes what its previous process left behind, and no other
runner's or installation's sweep touches it.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import httpx

from orchestrator.docker.engine import DockerEngine
from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX, ContainerSpec
from orchestrator.errors import ContainerFailure, EngineUnavailable, OrchestratorError
from orchestrator.rules.definition_spec import READINESS_HEADERS
from orchestrator.rules.worker_states import WorkerState
from orchestrator.runner.log_pump import LogPump
from orchestrator.services import worker_containers
from orchestrator.storage.db import Database

logger = logging.getLogger(__name__)

# The label every worker container carries: its definition as ``name:version``.
WORKER_LABEL = f"{LABEL_PREFIX}worker"
# The runner process (``Identity.session``) that started a worker container.
SESSION_LABEL = f"{LABEL_PREFIX}runner-session"
READY_POLL_INTERVAL = 0.2  # seconds between two readiness checks of a starting container
READY_PROBE_TIMEOUT = 2.0  # seconds one readiness check may take
WAIT_INTERVAL = 0.25  # seconds between looks at the stop condition while waiting for a worker
REAP_INTERVAL = 0.5  # seconds between two passes of the idle reaper

# Told each state of a container of the pool (None: it is gone).
Report = Callable[[str, WorkerState | None], None]


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker definition says about its containers (the ``worker`` section)."""

    port: int
    path: str
    readiness_path: str | None
    replicas: int
    idle_timeout: float

    @classmethod
    def from_section(cls, section: dict[str, Any]) -> WorkerConfig:
        """From a job's stored ``worker`` section (already validated at registration)."""
        return cls(
            port=int(section["port"]),
            path=str(section["path"]),
            readiness_path=section.get("readiness_path"),
            replicas=int(section["replicas"]),
            idle_timeout=float(section["idle_timeout"]),
        )


@dataclass(eq=False)
class Worker:
    """One ready worker container: where to reach it and the pump following its output."""

    container_id: str
    name: str
    url: str
    pump: LogPump
    busy: bool = True
    idle_since: float = 0.0
    served: int = 0


class WorkerPool:
    """The containers of one worker configuration; each serves one job at a time."""

    def __init__(
        self,
        engine: DockerEngine,
        spec: ContainerSpec,
        config: WorkerConfig,
        secret_values: list[str],
        ready_timeout: float,
        report: Report,
    ) -> None:
        self.engine = engine
        self.spec = spec
        self.config = config
        self.ready_timeout = ready_timeout
        self.report = report
        self._secrets = secret_values
        self._workers: list[Worker] = []
        self._starting = 0
        # Jobs holding the pool (from ``WorkerPools.pool`` to ``leave``): it is kept meanwhile.
        self._users = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self, stop: Callable[[], bool]) -> Worker | None:
        """A ready worker for one job, marked busy: an idle one, else a new one while the pool
        has fewer than ``replicas``, else the first one freed. None when ``stop()`` became true
        while waiting. Raises ``ContainerFailure`` (a new container never got ready),
        ``ImageUnavailable`` or ``EngineUnavailable``."""
        while True:
            with self._cond:
                worker = self._take_idle()
                while worker is None and len(self._workers) + self._starting >= (
                    self.config.replicas
                ):
                    if stop() or self._closed:
                        return None
                    self._cond.wait(WAIT_INTERVAL)
                    worker = self._take_idle()
                if worker is None:
                    if self._closed:
                        return None
                    self._starting += 1
            if worker is None:
                try:
                    return self._start(stop)
                finally:
                    with self._cond:
                        self._starting -= 1
                        self._cond.notify_all()
            state = self.engine.state(worker.container_id)
            if state is not None and state.running:
                # Output written while it was idle belongs to no job.
                worker.pump.take()
                return worker
            logger.info(
                "worker container %s exited while idle; replacing it",
                worker.name,
                extra={"action": "worker_died"},
            )
            self.discard(worker)

    def _take_idle(self) -> Worker | None:
        for worker in self._workers:
            if not worker.busy:
                worker.busy = True
                return worker
        return None

    def _start(self, stop: Callable[[], bool]) -> Worker | None:
        """Create and start a container and wait until it is ready; registered busy."""
        spec = replace(self.spec, name=f"{self.spec.name}-{uuid.uuid4().hex[:8]}")
        container_id = self.engine.create(spec)
        self.report(container_id, WorkerState.CREATING)
        pump = LogPump(partial(self.engine.logs, container_id), self._secrets)
        try:
            self.engine.start(container_id)
            pump.start()
            url = self._wait_ready(container_id, spec.name, stop)
        except BaseException:
            pump.stop()
            self._remove(container_id)
            raise
        if url is None:
            pump.stop()
            self._remove(container_id)
            return None
        worker = Worker(container_id=container_id, name=spec.name, url=url, pump=pump)
        with self._cond:
            closed = self._closed
            if not closed:
                self._workers.append(worker)
        if closed:
            # The runner is stopping: it removes its workers, this one included.
            pump.stop()
            self._remove(container_id)
            return None
        self.report(container_id, WorkerState.RUNNING)
        logger.info(
            "worker container %s ready at %s",
            spec.name,
            url,
            extra={"action": "worker_started", "container_id": container_id},
        )
        return worker

    def _wait_ready(self, container_id: str, name: str, stop: Callable[[], bool]) -> str | None:
        """The worker's base URL once it answers; None if ``stop()`` came first."""
        deadline = time.monotonic() + self.ready_timeout
        while not stop():
            state = self.engine.state(container_id)
            if state is None or not state.running:
                code = "" if state is None else f" with code {state.exit_code}"
                raise ContainerFailure(f"the worker container {name} exited{code} before ready")
            address = self.engine.address(container_id, self.spec.network)
            if address is not None:
                url = f"http://{address}:{self.config.port}"
                if self._answers(address, url):
                    return url
            if time.monotonic() > deadline:
                probe = self.config.readiness_path or f"port {self.config.port}"
                raise ContainerFailure(
                    f"the worker container {name} was not ready within "
                    f"{self.ready_timeout:g}s ({probe} did not answer)"
                )
            time.sleep(READY_POLL_INTERVAL)
        return None

    def _answers(self, address: str, url: str) -> bool:
        """Whether the readiness path answers 2xx (or, without one, the port accepts)."""
        try:
            if self.config.readiness_path is None:
                socket.create_connection((address, self.config.port), READY_PROBE_TIMEOUT).close()
                return True
            response = httpx.get(
                url + self.config.readiness_path,
                headers=READINESS_HEADERS,
                timeout=READY_PROBE_TIMEOUT,
            )
            return response.is_success
        except (OSError, httpx.HTTPError):
            return False

    def release(self, worker: Worker, *, healthy: bool) -> None:
        """Give a worker back after a job: idle again, or (``healthy`` False: it died, or may
        still be busy with an abandoned request) removed, to be replaced on demand."""
        if not healthy:
            self.discard(worker)
            return
        with self._cond:
            worker.busy = False
            worker.served += 1
            worker.idle_since = time.monotonic()
            self._cond.notify_all()

    def discard(self, worker: Worker) -> None:
        """Remove a worker's container and forget it."""
        with self._cond:
            if worker in self._workers:
                self._workers.remove(worker)
            self._cond.notify_all()
        worker.pump.stop()
        self._remove(worker.container_id)

    def reap(self, now: float) -> int:
        """Remove the workers idle for longer than ``idle_timeout``; how many."""
        with self._cond:
            idle = [
                w
                for w in self._workers
                if not w.busy and now - w.idle_since > self.config.idle_timeout
            ]
            for worker in idle:
                self._workers.remove(worker)
        for worker in idle:
            logger.info(
                "worker container %s idle for %gs; stopping it",
                worker.name,
                self.config.idle_timeout,
                extra={"action": "worker_idle_stopped"},
            )
            worker.pump.stop()
            self._remove(worker.container_id)
        return len(idle)

    def join(self) -> None:
        """A job starts using the pool (``WorkerPools.pool`` calls it)."""
        with self._cond:
            self._users += 1

    def leave(self) -> None:
        """A job is done with the pool."""
        with self._cond:
            self._users -= 1

    @property
    def unused(self) -> bool:
        """Whether no job holds the pool and it has no container."""
        with self._cond:
            return not self._workers and not self._starting and not self._users

    def close(self) -> None:
        """Remove every container of the pool, busy or not."""
        with self._cond:
            self._closed = True
            workers = list(self._workers)
            self._workers.clear()
            self._cond.notify_all()
        for worker in workers:
            worker.pump.stop()
            self._remove(worker.container_id)

    def _remove(self, container_id: str) -> None:
        self.report(container_id, WorkerState.STOPPING)
        try:
            self.engine.remove(container_id)
            self.report(container_id, None)
        except OrchestratorError as exc:
            logger.warning(
                "could not remove worker container %s: %s",
                container_id[:12],
                exc.message,
                extra={"action": "worker_remove_failed"},
            )


class WorkerPools:
    """A runner's worker pools by key, and the reaper that stops idle workers."""

    def __init__(
        self, engine: DockerEngine, db: Database, runner: str, session: str, installation: str
    ) -> None:
        self.engine = engine
        self.db = db
        self.runner = runner
        self.session = session
        self.installation = installation
        self._pools: dict[str, WorkerPool] = {}
        self._lock = threading.Lock()

    def pool(self, key: str, make: Callable[[], WorkerPool]) -> WorkerPool:
        """The pool of ``key`` (made by ``make()`` when there is none), joined: the caller
        calls its ``leave()`` when done with it."""
        with self._lock:
            found = self._pools.get(key)
            if found is None:
                found = self._pools[key] = make()
            found.join()
            return found

    def reporter(self, project: str, queue: str, definition: str, version: int) -> Report:
        """What a pool serving this queue's jobs of this definition version reports its
        containers' states to: a row of its own each, in ``worker_containers``."""
        owner = worker_containers.WorkerOwner(
            runner=self.runner,
            session=self.session,
            project=project,
            queue=queue,
            definition=definition,
            version=version,
        )
        return partial(self._record, owner)

    def _record(
        self, owner: worker_containers.WorkerOwner, container_id: str, state: WorkerState | None
    ) -> None:
        try:
            with self.db.transaction() as session:
                if state is None:
                    worker_containers.forget(session, container_id)
                else:
                    worker_containers.record(session, owner, container_id, state)
        except Exception as exc:
            # What is recorded only describes the containers: a database that does not answer
            # must not stop one from starting or being removed. A row left behind is deleted by
            # the runner's next process, and only a live process's rows are counted.
            logger.warning(
                "could not record worker container %s as %s: %s",
                container_id[:12],
                state or "gone",
                getattr(exc, "message", type(exc).__name__),
                extra={"action": "worker_unrecorded"},
            )

    def labels(self) -> dict[str, str]:
        """The labels that make a container one of this runner process's workers."""
        return {
            INSTALLATION_LABEL: self.installation,
            f"{LABEL_PREFIX}runner": self.runner,
            SESSION_LABEL: self.session,
        }

    def run_once(self) -> int:
        """Stop the idle workers and forget empty pools; how many workers were stopped."""
        with self._lock:
            pools = list(self._pools.items())
        now = time.monotonic()
        stopped = sum(pool.reap(now) for _, pool in pools)
        with self._lock:
            for key, pool in pools:
                # Made again on demand.
                if pool.unused and self._pools.get(key) is pool:
                    del self._pools[key]
        return stopped

    def remove_leftovers(self) -> int:
        """Remove the worker containers an earlier process of this runner left, and their
        rows; how many containers."""
        try:
            with self.db.transaction() as session:
                worker_containers.forget_earlier_processes(session, self.runner, self.session)
        except OrchestratorError as exc:
            logger.warning(
                "could not forget the worker containers of earlier processes: %s",
                exc.message,
                extra={"action": "worker_unrecorded"},
            )
        try:
            found = self.engine.find_labelled(WORKER_LABEL)
        except EngineUnavailable:
            return 0
        removed = 0
        for container_id, labels in found.items():
            # Made before installations were labelled: taken as ours where the runner is.
            if labels.get(INSTALLATION_LABEL, self.installation) != self.installation:
                continue
            if labels.get(f"{LABEL_PREFIX}runner") != self.runner:
                continue
            if labels.get(SESSION_LABEL) == self.session:
                continue
            try:
                self.engine.remove(container_id)
                removed += 1
            except OrchestratorError as exc:
                logger.warning("could not remove a left-over worker: %s", exc.message)
        if removed:
            logger.info(
                "removed %d worker containers left by an earlier process",
                removed,
                extra={"action": "worker_leftovers_removed"},
            )
        return removed

    def close(self) -> None:
        """Remove every worker container of this runner process."""
        with self._lock:
            pools = list(self._pools.values())
            self._pools.clear()
        for pool in pools:
            pool.close()
