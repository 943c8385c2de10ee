"""One attempt of a job of an HTTP worker definition: borrow a worker, POST the input, record.

The job's ``input`` is POSTed to a ready container of its pool (``workers.py``); a 2xx answer
is success and its body the output (JSON when it parses, else text), anything else a failed
attempt that the retry policy may repeat. The worker's output while it serves the job is the
attempt's log. A worker that died, timed out or was left busy by a cancel is replaced. A worker
job cannot be adopted after a restart: its container went with the runner process.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from dataclasses import replace
from typing import TYPE_CHECKING

import httpx

from orchestrator.docker.spec import LABEL_PREFIX, ContainerSpec, ContainerState
from orchestrator.errors import (
    EngineUnavailable,
    ImageUnavailable,
    OrchestratorError,
    PolicyRefused,
)
from orchestrator.rules.masking import mask
from orchestrator.rules.reasons import FailureReason
from orchestrator.runner.attempt import Attempt
from orchestrator.runner.log_budget import LogBudget
from orchestrator.runner.log_pump import LogPump
from orchestrator.runner.output import parse_output
from orchestrator.runner.worker_pools import WORKER_LABEL, Worker, WorkerConfig, WorkerPool
from orchestrator.services import attempts
from orchestrator.services.containers import container_spec
from orchestrator.storage.models import Job

if TYPE_CHECKING:
    from orchestrator.runner.context import AttemptContext

logger = logging.getLogger(__name__)

# The environment of a run-to-completion attempt that means nothing to a shared container.
PER_JOB_ENV = ("ORCH_JOB_ID", "ORCH_ATTEMPT", "ORCH_INPUT", "ORCH_OUTPUT")
CONNECT_TIMEOUT = 10.0  # seconds to open a connection to a ready worker
# How long, after the answer, output the worker wrote while serving may take to reach its log.
LOG_SETTLE_SECONDS = 1.0
ERROR_BODY_CHARS = 200  # characters of a non-2xx answer quoted in the attempt's error
# How long a worker whose connection broke may take to be seen exiting, if it is dying.
EXIT_GRACE_SECONDS = 3.0


def is_worker_job(container: dict[str, object]) -> bool:
    """Whether a job's container options come from a worker definition."""
    return bool(container.get("worker"))


def worker_spec(
    context: AttemptContext, job: Job, secrets: dict[str, str], volumes: list[str] | None = None
) -> ContainerSpec:
    """The container of ``job``'s worker: the job's container without its per-job parts, with
    labels that make it this runner process's worker (no job-id: no attempt's sweep takes it)."""
    base = container_spec(
        job, secrets, context.name, context.settings, context.installation, volumes=volumes
    )
    env = {name: value for name, value in base.env.items() if name not in PER_JOB_ENV}
    labels = {
        **job.container["labels"],
        **context.workers.labels(),
        WORKER_LABEL: f"{job.definition_name}:{job.definition_version}",
        f"{LABEL_PREFIX}project": job.project,
        f"{LABEL_PREFIX}queue": job.queue,
    }
    return replace(
        base,
        name=f"orch-worker-{job.definition_name}",
        env=env,
        labels=labels,
        reached_by_runner=True,
    )


def pool_key(job: Job, spec: ContainerSpec, config: WorkerConfig) -> str:
    """Jobs whose containers would be the same share a pool: same queue, definition version,
    command, env (secret env included) and options. Kept in memory only."""
    shape = {
        "project": job.project,
        "queue": job.queue,
        "definition": f"{job.definition_name}:{job.definition_version}",
        "spec": {**spec.__dict__, "name": None},
        "worker": config.__dict__,
    }
    return hashlib.sha256(json.dumps(shape, sort_keys=True, default=str).encode()).hexdigest()


class WorkerAttempt(Attempt):
    """An attempt served by a worker container of the job's pool instead of its own container."""

    def __init__(self, context: AttemptContext, job: Job, *, adopted: bool) -> None:
        super().__init__(context, job, adopted=adopted)
        self._pool: WorkerPool | None = None
        self._worker: Worker | None = None

    def _run(self) -> None:
        try:
            self._secrets = attempts.secret_values(self.job, self.context.box)
        except OrchestratorError as exc:
            unreadable = FailureReason.CREATE_FAILED
            self._finish(
                attempts.AttemptResult(error=exc.message, retryable=False, reason=unreadable)
            )
            return
        if self.adopted:
            self._give_back()
            return
        if self._input_refused():
            return
        try:
            resolved = self.context.policy.resolve_for_runner(
                self.job.container, timeout=self.job.timeout
            )
            self._volumes = resolved["volumes"]
        except PolicyRefused as exc:
            error = f"this runner's container policy refuses the job: {exc.message}"
            refused = FailureReason.POLICY_REFUSED
            self._finish(attempts.AttemptResult(error=error, retryable=False, reason=refused))
            return
        spec = worker_spec(self.context, self.job, self._secrets, self._volumes)
        config = WorkerConfig.from_section(self.job.container["worker"])
        settings = self.context.settings
        pool = self.context.workers.pool(
            pool_key(self.job, spec, config),
            lambda: WorkerPool(
                self._engine,
                spec,
                config,
                list(self._secrets.values()),
                settings.worker_ready_timeout,
                self.context.workers.reporter(
                    self.job.project,
                    self.job.queue,
                    self.job.definition_name,
                    self.job.definition_version,
                ),
            ),
        )
        self._pool = pool
        try:
            self._borrow_and_serve(pool, config)
        finally:
            # Still borrowed only when something failed on the way: replace it.
            self._return_worker(healthy=False)
            pool.leave()

    def _give_back(self) -> None:
        """After a restart: the worker that served the attempt is gone with the old process."""
        self._not_adoptable(
            "the runner restarted before a worker served the job",
            "the runner restarted while its worker container served the job",
        )

    def _stopping(self) -> bool:
        return self._cancel.is_set() or self._detach.is_set() or self._abandon.is_set()

    def _borrow_and_serve(self, pool: WorkerPool, config: WorkerConfig) -> None:
        try:
            worker = pool.acquire(self._stopping)
        except EngineUnavailable as exc:
            self.context.engine_lost(exc.message)
            self._requeue(exc.message)
            return
        except ImageUnavailable as exc:
            message = mask(exc.message, self._secrets.values())
            missing = FailureReason.IMAGE_MISSING
            self._finish(attempts.AttemptResult(error=message, retryable=False, reason=missing))
            return
        except OrchestratorError as exc:
            # The container failed to start or to get ready: another attempt may fare better.
            message = mask(exc.message, self._secrets.values())
            failed = FailureReason.CREATE_FAILED
            self._finish(attempts.AttemptResult(error=message, reason=failed))
            return
        if worker is None:
            if self._cancel.is_set():
                self._finish(attempts.AttemptResult(cancelled=True))
            elif self._detach.is_set():
                self._requeue("the runner stopped before a worker served the job")
            return
        self._worker = worker
        self.container_id = worker.container_id
        with self.context.db.transaction() as session:
            held = attempts.mark_running(
                session,
                self.context.hub,
                self.job_id,
                self.context.name,
                self.number,
                worker.container_id,
                {"worker": worker.name},
            )
        if not held:
            self._return_worker(healthy=True)
            return
        logger.info(
            "worker %s serves job %s",
            worker.name,
            self.job_id,
            extra={"action": "worker_serving", "job_id": self.job_id},
        )
        self._serve(worker, config)

    def _serve(self, worker: Worker, config: WorkerConfig) -> None:
        """POST the input, store the worker's output meanwhile, enforce timeout and cancel."""
        answers: list[tuple[attempts.AttemptResult, bool]] = []
        request = threading.Thread(
            target=lambda: answers.append(self._post(worker, config)),
            name=f"post-{self.job_id}",
            daemon=True,
        )
        budget = LogBudget(self.context.settings.max_log_bytes)
        interval = self.context.settings.log_flush_interval
        timeout = self.job.timeout
        started = time.monotonic()
        request.start()
        result: attempts.AttemptResult | None = None
        while request.is_alive():
            request.join(interval)
            self._store_logs(worker.pump, budget, ending=False)
            if self._abandon.is_set():
                self._return_worker(healthy=False)
                return
            if self._detach.is_set():
                result = attempts.AttemptResult(
                    error="the runner stopped while its worker served the job",
                    interrupted=FailureReason.RUNNER_STOPPED,
                )
                break
            if self._cancel.is_set():
                result = attempts.AttemptResult(cancelled=True)
                break
            if timeout is not None and time.monotonic() - started > timeout:
                result = attempts.AttemptResult(
                    timed_out=True, error=f"timed out after {timeout:g}s"
                )
                break
        # A request left unanswered may still keep the worker busy: replace it.
        healthy = False
        if result is None:
            result, healthy = answers[0]
        try:
            self._settle_logs(worker.pump, budget)
            self._finish(result)
        finally:
            self._return_worker(healthy=healthy)

    def _settle_logs(self, pump: LogPump, budget: LogBudget) -> None:
        """Store what the worker wrote while serving; Docker passes on its last lines a moment
        after the answer, so wait until a flush interval brings nothing, up to a bound."""
        interval = self.context.settings.log_flush_interval
        deadline = time.monotonic() + LOG_SETTLE_SECONDS
        quiet = 0
        while quiet < 2 and time.monotonic() < deadline:
            time.sleep(interval)
            quiet = 0 if self._store_logs(pump, budget, ending=False) else quiet + 1
        self._store_logs(pump, budget, ending=True)

    def _post(self, worker: Worker, config: WorkerConfig) -> tuple[attempts.AttemptResult, bool]:
        """The attempt's result from the worker's answer, and whether the worker is healthy."""
        limit = self.context.settings.max_output_bytes
        headers = {
            "Content-Type": "application/json",
            "X-Orch-Job-Id": self.job_id,
            "X-Orch-Attempt": str(self.number),
        }
        body = json.dumps(self.job.input).encode()
        try:
            timeout = httpx.Timeout(None, connect=CONNECT_TIMEOUT)
            with (
                httpx.Client(timeout=timeout) as client,
                client.stream("POST", worker.url + config.path, content=body, headers=headers) as r,
            ):
                raw = b""
                for chunk in r.iter_bytes():
                    raw += chunk
                    if len(raw) > limit:
                        error = f"the worker's answer is larger than {limit} bytes"
                        too_large = FailureReason.OUTPUT_INVALID
                        return attempts.AttemptResult(error=error, reason=too_large), False
                status = r.status_code
        except httpx.HTTPError as exc:
            error = self._request_failed(worker, exc)
            failed = FailureReason.WORKER_FAILED
            return attempts.AttemptResult(error=error, reason=failed), False
        if not 200 <= status < 300:
            text = mask(raw.decode(errors="replace"), self._secrets.values())
            error = f"the worker answered HTTP {status}: {text[:ERROR_BODY_CHARS]}".rstrip(": ")
            failed = FailureReason.WORKER_FAILED
            return attempts.AttemptResult(error=error, reason=failed), True
        output, problem = self._output(raw)
        return attempts.AttemptResult(exit_code=0, output=output, error=problem), True

    def _output(self, raw: bytes) -> tuple[object, str | None]:
        """The answer's body as the job's output: JSON when it parses, else text; masked."""
        try:
            json.loads(raw)
        except (ValueError, RecursionError):
            text = raw.decode(errors="replace")
            return (mask(text, self._secrets.values()) if text else None), None
        return parse_output(raw, self._secrets.values())

    def _request_failed(self, worker: Worker, exc: httpx.HTTPError) -> str:
        """Why the request failed, saying so when the worker container died."""
        state = self._state_after_failure(worker)
        if state is None or not state.running:
            code = "" if state is None else f" with code {state.exit_code}"
            return f"the worker container {worker.name} exited{code} while serving the job"
        reason = str(exc) or type(exc).__name__
        return mask(f"the request to worker {worker.name} failed: {reason}", self._secrets.values())

    def _state_after_failure(self, worker: Worker) -> ContainerState | None:
        """The worker's state once it had a moment to exit: a container whose server died
        drops its connections a little before Docker sees it exit."""
        deadline = time.monotonic() + EXIT_GRACE_SECONDS
        while True:
            try:
                state = self._engine.state(worker.container_id)
            except OrchestratorError:
                return None
            if state is None or not state.running or time.monotonic() > deadline:
                return state
            time.sleep(0.1)

    def _return_worker(self, *, healthy: bool) -> None:
        """Give the borrowed worker back to its pool, once."""
        if self._pool is not None and self._worker is not None:
            self._pool.release(self._worker, healthy=healthy)
            self._worker = None

    def _remove(self) -> None:
        # After an unexpected error: the borrowed worker may be in any state; replace it.
        self._return_worker(healthy=False)
