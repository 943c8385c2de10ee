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
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.rules.masking import mask
from orchestrator.rules.retry import LEASE_MARGIN_SECONDS
from orchestrator.rules.schedule_states import ScheduleRunStatus, ScheduleStatus
from orchestrator.services.schedules import set_run_status, set_status
from orchestrator.storage.db import Database, after_commit
from orchestrator.storage.models import Schedule, ScheduleRun, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import HTTP_RUNS, schedule_topic

logger = logging.getLogger(__name__)

BODY_LIMIT = 1024  # bytes of a response body kept
# When a due run could not be claimed (another process holds it), look again this much later.
RECHECK = 0.1
_USERINFO = re.compile(r"(?<=://)[^/\s@]*@")


@dataclass(frozen=True)
class HttpRequest:
    """One request to send, secret headers included, and the values to mask in what comes
    back."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    timeout: float
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code (and body), or an error; both secret-free."""

    started: datetime
    status_code: int | None = None
    duration_ms: float | None = None
    body: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx response."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        """``HTTP 503`` or the error."""
        return f"HTTP {self.status_code}" if self.status_code is not None else str(self.error)


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


def describe(outcome: Outcome, attempt: int, total: int, will_retry: bool) -> str:
    """The schedule's ``last_outcome`` after an attempt."""
    if outcome.ok:
        took = f"{outcome.duration_ms:.0f} ms"
        return f"succeeded: HTTP {outcome.status_code} in {took} (attempt {attempt})"
    if will_retry:
        return f"retrying: {outcome.summary} (attempt {attempt} of {total})"
    plural = "attempt" if attempt == 1 else "attempts"
    return f"failed after {attempt} {plural}: {outcome.summary}"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` without secret values and without the userinfo of any URL in it."""
    return _USERINFO.sub("", mask(text, secrets))


def build_request(
    target: dict[str, Any], ciphertext: str | None, box: SecretBox, default_timeout: float
) -> HttpRequest:
    """The request of a stored target, its secret headers decrypted."""
    secret_headers = box.decrypt(ciphertext) if ciphertext else {}
    url = str(target["url"])
    parts = urlsplit(url)
    secrets = [*secret_headers.values(), *(v for v in (parts.password,) if v)]
    timeout = target.get("timeout")
    return HttpRequest(
        method=str(target.get("method") or "POST"),
        url=url,
        headers={**target.get("headers", {}), **secret_headers},
        body=target.get("body"),
        timeout=float(timeout) if timeout else default_timeout,
        secrets=tuple(secrets),
    )


def _error_text(exc: Exception, request: HttpRequest) -> str:
    """What went wrong, in words that carry no header value or URL userinfo."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {request.timeout} s"
    if isinstance(exc, httpx.ConnectError):
        message = str(exc)
        if "refused" in message.lower():
            return "connection refused"
        return scrub(f"connection failed: {message or type(exc).__name__}", request.secrets)
    if isinstance(exc, httpx.LocalProtocolError):
        # Its message may quote a header as bytes, beyond the reach of masking.
        return "request could not be sent: a header or the body is not valid HTTP"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return scrub(f"invalid URL: {exc}", request.secrets)
    if isinstance(exc, httpx.TransportError):
        return scrub(f"network error: {str(exc) or type(exc).__name__}", request.secrets)
    return f"request failed: {type(exc).__name__}"


def send(client: httpx.Client, request: HttpRequest) -> Outcome:
    """Send ``request`` once (no redirects followed); its outcome, masked."""
    started_at = utcnow()
    started = time.monotonic()
    # A little more than the limit, so a secret cut by the limit is still masked whole.
    keep = BODY_LIMIT + max((len(s.encode()) for s in request.secrets), default=0)
    try:
        with client.stream(
            request.method,
            request.url,
            headers=request.headers,
            content=None if request.body is None else request.body.encode(),
            timeout=request.timeout,
            follow_redirects=False,
        ) as response:
            kept = bytearray()
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) >= keep or time.monotonic() - started > request.timeout:
                    break
            status_code = response.status_code
    except Exception as exc:
        return Outcome(
            started=started_at,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            error=_error_text(exc, request),
        )
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    body = keep_body(bytes(kept[:keep]), cut=len(kept) >= keep, secrets=request.secrets)
    return Outcome(started=started_at, status_code=status_code, duration_ms=duration_ms, body=body)


def keep_body(head: bytes, *, cut: bool, secrets: Sequence[str]) -> str:
    """The first ``BODY_LIMIT`` bytes of a body, as text, secret values masked.

    ``head`` (the first bytes read) runs past the limit by the longest secret, so a secret the
    limit cuts is masked whole. When ``head`` itself was cut short of the body, a tail that
    begins a secret value is dropped first: masking shortens the text, and could draw that
    fragment inside the limit.
    """
    text = head.decode("utf-8", errors="replace")
    if cut:
        text = _without_secret_start(text, secrets)
    return mask(text, secrets).encode()[:BODY_LIMIT].decode("utf-8", errors="ignore")


def _without_secret_start(text: str, secrets: Sequence[str]) -> str:
    """``text`` less any tail that is the start of a secret value."""
    for value in secrets:
        for length in range(min(len(value) - 1, len(text)), 0, -1):
            if text.endswith(value[:length]):
                text = text[:-length]
                break
    return text


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
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start the loop thread (and the pool)."""
        self._ensure_pool()
        self._thread = threading.Thread(target=self._loop, name="http-targets", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop claiming; let requests in flight finish (or time out) and record them."""
        self._stop.set()
        self.hub.publish_local(self._freed)
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()

    def _ensure_pool(self) -> tuple[ThreadPoolExecutor, httpx.Client]:
        if self._pool is None or self._client is None:
            limits = httpx.Limits(max_connections=self._capacity)
            self._client = httpx.Client(limits=limits, follow_redirects=False)
            self._pool = ThreadPoolExecutor(self._capacity, thread_name_prefix="http-target")
        return self._pool, self._client

    def _loop(self) -> None:
        while not self._stop.is_set():
            seen = {t: self.hub.version(t) for t in (HTTP_RUNS, self._freed)}
            try:
                claimed = self.run_due()
                wait = self.seconds_to_next()
                if wait == 0 and claimed == 0:
                    wait = RECHECK
            except Exception as exc:  # try again shortly
                # An unreachable database is logged once for the process (``db.Outage``).
                if not self.db.outage_seen(exc):
                    logger.exception(
                        "HTTP target pass failed", extra={"action": "http_runs_failed"}
                    )
                wait = self.settings.poll_interval
            if wait > 0 and not self._stop.is_set():
                self.hub.wait(seen, wait)

    # --- one pass -------------------------------------------------------------------------

    def run_due(self) -> int:
        """Count expired leases as interrupted attempts, then claim due attempts (as many as
        the pool has room for) and hand them to the pool; how many were claimed."""
        self._recover_expired()
        with self._lock:
            room = self._capacity - self._in_flight
        if room <= 0 or self._stop.is_set():
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
            if self.db.outage_seen(exc):
                # No traceback: the outage has its own line (``db.Outage``).
                logger.warning(
                    "could not record attempt %d of schedule run %d (database unavailable); "
                    "it counts as interrupted once its lease runs out",
                    claim.attempt,
                    claim.run_id,
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
            delay = None if outcome.ok else retry_delay(claim.attempt, delays)
            run.status_code, run.duration_ms = outcome.status_code, outcome.duration_ms
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
