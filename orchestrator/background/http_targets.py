"""The executor of schedules' HTTP targets: sends each attempt of a pending run, records it and
retries per the schedule's ``retry_delays``.

The scheduler records a run (``pending``) and publishes ``HTTP_RUNS``; from there the run is
this module's. An attempt is claimed in the database (``FOR UPDATE SKIP LOCKED`` on PostgreSQL;
SQLite has one writer) and leased, so several servers on one database send it once; its result
is written only while the run still holds that claim, so a run the scheduler ``replaced`` stays
so. Secret header values never reach a stored row: error texts and bodies are masked.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator import telemetry
from orchestrator.background.http_requests import Outcome, build_request, describe, send
from orchestrator.background.outbound import guarded_transport
from orchestrator.config import Settings
from orchestrator.errors import DatabaseUnavailable, OrchestratorError
from orchestrator.rules.retry import LEASE_MARGIN_SECONDS
from orchestrator.rules.schedule_states import ScheduleRunStatus, ScheduleStatus
from orchestrator.services.schedules import set_run_status, set_status
from orchestrator.storage.db import Database, after_commit
from orchestrator.storage.models import Schedule, ScheduleRun, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop
from orchestrator.wakeups.topics import HTTP_RUNS, schedule_topic

logger = logging.getLogger(__name__)

# When a due run could not be claimed (another process holds it), look again this much later.
RECHECK = 0.1


@dataclass(frozen=True)
class Claim:
    """An attempt this process holds: the fence its result is written under, and the target
    as it was when claimed."""

    run_id: int
    schedule_id: str
    attempt: int
    lease_until: datetime
    target: dict[str, Any]
    secret_ciphertext: str | None


def retry_delay(attempt: int, retry_delays: Sequence[float]) -> float | None:
    """Seconds from the failure of ``attempt`` (1-based) to the next; None if it was the last."""
    return float(retry_delays[attempt - 1]) if attempt <= len(retry_delays) else None


class HttpTargetRunner:
    """Claims due attempts of HTTP runs and sends them on a pool of ``http_concurrency``
    threads; ``run_due`` is one pass, ``start``/``stop`` run the loop."""

    def __init__(self, settings: Settings, db: Database, hub: Hub, box: SecretBox) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.box = box
        self._capacity = settings.http_concurrency
        self._in_flight = 0
        self._lock = threading.Lock()
        # Local only: a slot of the pool came free.
        self._freed = f"http-runs:{id(self)}"
        self._claimed = 0  # by the last pass
        self.loop = Loop(
            name="http-targets",
            hub=hub,
            run_once=self._pass,
            next_wait=self._wait_after_pass,
            failure_wait=lambda: self.settings.poll_interval,
            failed="HTTP target pass failed",
            action="http_runs_failed",
            topics=lambda: (HTTP_RUNS, self._freed),
        )
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (and the pool)."""
        self._ensure_pool()
        self.loop.start()

    def stop(self) -> None:
        """Stop claiming; let requests in flight finish (or time out) and record them."""
        self.loop.stop(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()

    def _ensure_pool(self) -> tuple[ThreadPoolExecutor, httpx.Client]:
        if self._pool is None or self._client is None:
            limits = httpx.Limits(max_connections=self._capacity)
            transport = guarded_transport(self.settings.outbound_rule(), limits)
            self._client = httpx.Client(transport=transport, follow_redirects=False)
            self._pool = ThreadPoolExecutor(self._capacity, thread_name_prefix="http-target")
        return self._pool, self._client

    def _pass(self) -> None:
        self._claimed = self.run_due()

    def _wait_after_pass(self) -> float:
        wait = self.seconds_to_next()
        # Due now yet nothing claimed: another process holds it; look again a little later.
        return RECHECK if wait == 0 and self._claimed == 0 else wait

    # --- one pass -------------------------------------------------------------------------

    def run_due(self) -> int:
        """Count expired leases as interrupted attempts, then claim due attempts (as many as
        the pool has room for) and hand them to the pool; how many were claimed."""
        self._recover_expired()
        with self._lock:
            room = self._capacity - self._in_flight
        if room <= 0 or self.loop.stopping:
            return 0
        claims = self._claim(room)
        if not claims:
            return 0
        pool, client = self._ensure_pool()
        with self._lock:
            self._in_flight += len(claims)
        for claim in claims:
            pool.submit(self._attempt, client, claim)
        return len(claims)

    def seconds_to_next(self) -> float:
        """Seconds until an attempt is due or a lease runs out (the poll interval at most);
        the poll interval when the pool is full (a freed slot wakes the loop)."""
        limit = self.settings.poll_interval
        with self._lock:
            if self._in_flight >= self._capacity:
                return limit
        with self.db.read() as session:
            due = session.exec(
                select(sa.func.min(ScheduleRun.next_attempt_at))
                .join(Schedule, col(Schedule.id) == col(ScheduleRun.schedule_id))
                .where(
                    Schedule.target_kind == "http", ScheduleRun.status == ScheduleRunStatus.PENDING
                )
            ).one()
            lease = session.exec(
                select(sa.func.min(ScheduleRun.lease_until))
                .join(Schedule, col(Schedule.id) == col(ScheduleRun.schedule_id))
                .where(
                    Schedule.target_kind == "http", ScheduleRun.status == ScheduleRunStatus.RUNNING
                )
            ).one()
        times = [t for t in (due, lease) if t is not None]
        if not times:
            return limit
        return max(0.0, min(limit, (min(times) - utcnow()).total_seconds()))

    def _claim(self, limit: int) -> list[Claim]:
        """Lease up to ``limit`` due attempts in one transaction."""
        now = utcnow()
        with self.db.transaction() as session:
            rows = session.exec(
                select(ScheduleRun, Schedule)
                .join(Schedule, col(Schedule.id) == col(ScheduleRun.schedule_id))
                .where(
                    Schedule.target_kind == "http",
                    ScheduleRun.status == ScheduleRunStatus.PENDING,
                    col(ScheduleRun.next_attempt_at) <= now,
                )
                .order_by(col(ScheduleRun.next_attempt_at), col(ScheduleRun.id))
                .limit(limit)
                .with_for_update(skip_locked=True, of=ScheduleRun)
            ).all()
            claims = []
            for run, schedule in rows:
                assert run.id is not None
                timeout = schedule.target.get("timeout") or self.settings.http_timeout
                set_run_status(session, run, ScheduleRunStatus.RUNNING)
                run.attempts += 1
                run.lease_until = now + timedelta(seconds=float(timeout) + LEASE_MARGIN_SECONDS)
                claims.append(
                    Claim(
                        run_id=run.id,
                        schedule_id=schedule.id,
                        attempt=run.attempts,
                        lease_until=run.lease_until,
                        target=dict(schedule.target),
                        secret_ciphertext=schedule.secret_ciphertext,
                    )
                )
            topics = [schedule_topic(claim.schedule_id) for claim in claims]
            if topics:
                after_commit(session, lambda: self.hub.publish(*topics))
        return claims

    def _recover_expired(self) -> None:
        """Count each attempt whose lease ran out (its process died mid-request) as failed."""
        with self.db.read() as session:
            expired = session.exec(
                select(
                    ScheduleRun.id,
                    ScheduleRun.schedule_id,
                    ScheduleRun.attempts,
                    ScheduleRun.lease_until,
                )
                .join(Schedule, col(Schedule.id) == col(ScheduleRun.schedule_id))
                .where(
                    Schedule.target_kind == "http",
                    ScheduleRun.status == ScheduleRunStatus.RUNNING,
                    col(ScheduleRun.lease_until) < utcnow(),
                )
            ).all()
        for run_id, schedule_id, attempts, lease_until in expired:
            if run_id is None or lease_until is None:  # never: both are in the query
                continue
            claim = Claim(run_id, schedule_id, attempts, lease_until, {}, None)
            if self._record(claim, Outcome(started=utcnow(), error="interrupted")):
                logger.warning(
                    "attempt %d of schedule run %d was interrupted (its lease ran out)",
                    attempts,
                    run_id,
                    extra={"action": "http_attempt_interrupted", "schedule_id": schedule_id},
                )

    # --- one attempt ----------------------------------------------------------------------

    def _attempt(self, client: httpx.Client, claim: Claim) -> None:
        """Send the claimed attempt and record it (in a pool thread)."""
        try:
            try:
                request = build_request(
                    claim.target, claim.secret_ciphertext, self.box, self.settings.http_timeout
                )
            except OrchestratorError as exc:  # the key ring cannot open the secrets
                outcome = Outcome(started=utcnow(), error=exc.message)
            else:
                outcome = send(client, request)
            self._record(claim, outcome)
        except Exception as exc:  # the lease runs out and the attempt counts as interrupted
            if isinstance(exc, DatabaseUnavailable):
                # No traceback: the database's trouble is no bug of ours.
                logger.warning(
                    "could not record attempt %d of schedule run %d (%s); "
                    "it counts as interrupted once its lease runs out",
                    claim.attempt,
                    claim.run_id,
                    exc.reason,
                    extra={"action": "http_attempt_unrecorded", "schedule_id": claim.schedule_id},
                )
            else:
                logger.exception(
                    "recording an HTTP attempt failed",
                    extra={"action": "http_attempt_failed", "schedule_id": claim.schedule_id},
                )
        finally:
            with self._lock:
                self._in_flight -= 1
            self.hub.publish_local(self._freed)

    def _record(self, claim: Claim, outcome: Outcome) -> bool:
        """Write the attempt's outcome if the run still holds this claim; whether it did."""
        now = utcnow()
        with self.db.transaction() as session:
            # The schedule first, then the run: the order the scheduler locks them in.
            schedule = session.exec(
                select(Schedule).where(Schedule.id == claim.schedule_id).with_for_update()
            ).first()
            run = session.exec(
                select(ScheduleRun).where(ScheduleRun.id == claim.run_id).with_for_update()
            ).first()
            if (
                run is None
                or run.status != ScheduleRunStatus.RUNNING
                or run.attempts != claim.attempt
                or run.lease_until != claim.lease_until
            ):
                return False
            delays = schedule.retry_delays if schedule is not None else []
            # A refused address is not retried: only a change of DNS or settings would help.
            retried = not outcome.ok and not outcome.refused
            delay = retry_delay(claim.attempt, delays) if retried else None
            run.status_code, run.duration_ms = outcome.status_code, outcome.duration_ms
            after_commit(session, _counter(outcome.ok, (now - run.tick).total_seconds()))
            run.response_body, run.error = outcome.body, outcome.error
            run.attempt_log = [
                *run.attempt_log,
                {
                    "attempt": claim.attempt,
                    "time": outcome.started.isoformat(),
                    "status_code": outcome.status_code,
                    "duration_ms": outcome.duration_ms,
                    "error": outcome.error,
                },
            ]
            run.lease_until = None
            if delay is not None:
                set_run_status(session, run, ScheduleRunStatus.PENDING)
                run.next_attempt_at = now + timedelta(seconds=delay)
            else:
                ended = ScheduleRunStatus.SUCCEEDED if outcome.ok else ScheduleRunStatus.FAILED
                set_run_status(session, run, ended)
                run.next_attempt_at, run.finish_time = None, now
            if schedule is not None:
                total = 1 + len(delays)
                schedule.last_outcome = describe(outcome, claim.attempt, total, delay is not None)
                # A one-shot whose tick was taken (and not planned again since) ends with it.
                if delay is None and schedule.cron is None and schedule.next_run_at is None:
                    finished = ScheduleStatus.COMPLETED if outcome.ok else ScheduleStatus.FAILED
                    set_status(session, schedule, finished)
                schedule.update_time = now
                session.add(schedule)
            topics = [schedule_topic(claim.schedule_id)]
            if delay is not None:
                topics.append(HTTP_RUNS)
            after_commit(session, lambda: self.hub.publish(*topics))
        logger.info(
            "HTTP attempt %d of schedule run %d: %s",
            claim.attempt,
            claim.run_id,
            outcome.summary,
            extra={
                "action": "http_attempt_recorded",
                "schedule_id": claim.schedule_id,
                "status_code": outcome.status_code,
            },
        )
        return True


def _counter(ok: bool, lag: float) -> Callable[[], None]:
    """What counts a request's outcome (and a success's lag behind its tick) once recorded."""

    def count() -> None:
        telemetry.SCHEDULE_HTTP_REQUESTS.labels("ok" if ok else "failed").inc()
        if ok:
            telemetry.SCHEDULE_HTTP_LAG.observe(lag)

    return count
