"""The webhook sender: claims due deliveries in the database (several processes may share one
PostgreSQL), sends them on a thread pool with retries, and records each attempt. It never
changes a job's status, only appends ``webhook_*`` events to it.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote

import httpx
import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator import __version__, telemetry
from orchestrator.background.outbound import OutboundRefused, guarded_transport
from orchestrator.config import Settings
from orchestrator.errors import DatabaseUnavailable
from orchestrator.rules.delivery_states import DeliveryStatus
from orchestrator.rules.masking import mask, public_url, userinfo_of, with_userinfo
from orchestrator.rules.retry import LEASE_MARGIN_SECONDS, exponential_backoff
from orchestrator.rules.states import EventType
from orchestrator.services import jobs
from orchestrator.services.webhook_secrets import signature_header, signing_secrets
from orchestrator.services.webhooks import (
    open_userinfo,
    seal_migrated_credentials,
    set_delivery_status,
)
from orchestrator.storage.db import Database, after_commit
from orchestrator.storage.models import Job, WebhookDelivery, utcnow
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop
from orchestrator.wakeups.topics import WEBHOOKS

logger = logging.getLogger(__name__)

# The shortest wait of the sender's loop: due rows another process has locked are retried
# after this, not in a spin.
MIN_WAIT_SECONDS = 0.05
MAX_ERROR_CHARS = 500
# How long ``stop`` waits for sends in flight before leaving them to finish on their own.
STOP_WAIT_SECONDS = 5.0

# --- retry decisions (pure) ----------------------------------------------------------------


def backoff(
    attempts: int, base: float, maximum: float, rand: Callable[[], float] = random.random
) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: doubling from ``base``
    up to ``maximum``, then jittered into its upper half so that receivers coming back are not
    hit by every sender at once."""
    delay = exponential_backoff(attempts, base, maximum)
    return delay / 2 + delay / 2 * rand()


def next_attempt(
    attempts: int, create_time: datetime, now: datetime, settings: Settings
) -> datetime | None:
    """When to try again after ``attempts`` failed ones; None once that falls after the retry
    window (``webhook_retry_for`` from ``create_time``)."""
    delay = backoff(attempts, settings.webhook_retry_base, settings.webhook_retry_max)
    at = now + timedelta(seconds=delay)
    if at > create_time + timedelta(seconds=settings.webhook_retry_for):
        return None
    return at


def describe_error(exc: Exception, url: str, userinfo: str | None = None) -> str:
    """What went wrong with a send, without the URL's userinfo (in ``url`` or given apart) and
    never with a header."""
    text = str(exc) or type(exc).__name__
    userinfo = userinfo or userinfo_of(url) or ""
    password = userinfo.partition(":")[2]
    text = text.replace(url, public_url(url))
    text = mask(text, [v for v in (userinfo, password, unquote(password)) if v])
    return f"{type(exc).__name__}: {text}"[:MAX_ERROR_CHARS]


def basic_auth(userinfo: str | None) -> tuple[str, str] | None:
    """The Basic credentials in a URL's userinfo, decoded as HTTP clients take them from a URL
    (a user alone has an empty password); None without userinfo."""
    if userinfo is None:
        return None
    user, _, password = userinfo.partition(":")
    return unquote(user), unquote(password)


# --- the sender ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Claim:
    """A delivery claimed for one send: what the sending thread needs, without a session."""

    id: int
    number: int
    job_id: str
    message_id: str
    url: str  # without userinfo: the HTTP client logs the URL it sends to
    body: str
    lease_until: datetime
    # The signing secrets, current first (``signing_secrets``).
    secrets: tuple[str, ...] = field(repr=False)
    userinfo: str | None = field(default=None, repr=False)


def _signing_key(row: WebhookDelivery) -> tuple[str, str]:
    """Whose secrets sign ``row``: (a drop-in API's key, "") or ("", its project)."""
    return (row.signing_key, "") if row.signing_key else ("", row.project)


@dataclass(frozen=True)
class _Result:
    status_code: int | None
    error: str | None
    duration_ms: float
    # Not to be tried again: the outbound rule refused the receiver's address. Only a change
    # of DNS or of the settings would let a retry through; a redelivery can be asked for then.
    final: bool = False

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookSender:
    """Claims due deliveries and sends each on a pool of ``webhook_concurrency`` threads, so a
    slow receiver holds up only its own deliveries."""

    def __init__(self, settings: Settings, db: Database, hub: Hub, box: SecretBox) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.box = box
        self._lock = threading.Lock()
        # Before anything is sent (and before the scheduler, started later, submits a job
        # target's webhook): credentials an upgrade moved out of older rows get encrypted.
        with db.transaction() as session:
            sealed = seal_migrated_credentials(session, box)
        if sealed:
            logger.info(
                "encrypted %d webhook URL credential(s) taken out of their URLs by an upgrade",
                sealed,
                extra={"action": "webhook_credentials_sealed"},
            )
        self._in_flight = 0
        self.loop = Loop(
            name="webhook-sender",
            hub=hub,
            run_once=self.run_once,
            next_wait=self._next_wait,
            failure_wait=lambda: self.settings.poll_interval,
            failed="webhook loop failed; retrying",
            action="webhook_error",
            topics=lambda: (WEBHOOKS,),
        )
        self._pool = ThreadPoolExecutor(settings.webhook_concurrency, "webhook")
        limits = httpx.Limits(
            max_connections=settings.webhook_concurrency, max_keepalive_connections=0
        )
        self._client = httpx.Client(
            timeout=settings.webhook_timeout,
            follow_redirects=False,
            transport=guarded_transport(settings.outbound_rule(), limits),
            headers={"user-agent": f"orchestrator/{__version__}"},
        )

    def start(self) -> None:
        """Run the claim loop in a background thread."""
        self.loop.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop claiming; wait a little for sends in flight, then close the client."""
        self.loop.stop(timeout)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while self._free_slots() < self.settings.webhook_concurrency:
            if time.monotonic() > deadline:
                # Their client stays open: each send ends by itself within its timeouts and
                # is recorded as usual.
                logger.warning(
                    "leaving webhook sends in flight to finish on their own",
                    extra={"action": "webhook_sends_left"},
                )
                self._pool.shutdown(wait=False)
                return
            time.sleep(MIN_WAIT_SECONDS)
        self._pool.shutdown(wait=False)
        self._client.close()

    def run_once(self) -> int:
        """Claim as many due deliveries as there are free send slots and start sending them;
        how many were claimed."""
        free = self._free_slots()
        if free <= 0:
            return 0
        claims = self._claim(free)
        for claim in claims:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._deliver, claim)
        return len(claims)

    def _free_slots(self) -> int:
        with self._lock:
            return self.settings.webhook_concurrency - self._in_flight

    def _lease(self) -> timedelta:
        # Long enough for connect, send and the answer's headers, each bounded by the timeout.
        return timedelta(seconds=3 * self.settings.webhook_timeout + LEASE_MARGIN_SECONDS)

    def _claim(self, limit: int) -> list[_Claim]:
        now = utcnow()
        lease_until = now + self._lease()
        due = sa.or_(
            sa.and_(
                col(WebhookDelivery.status) == DeliveryStatus.PENDING,
                col(WebhookDelivery.next_attempt_at) <= now,
            ),
            # A send whose process stopped or died before it finished: tried again.
            sa.and_(
                col(WebhookDelivery.status) == DeliveryStatus.SENDING,
                col(WebhookDelivery.lease_until) <= now,
            ),
        )
        claims = []
        with self.db.transaction() as session:
            rows = session.exec(
                select(WebhookDelivery)
                .where(due)
                .order_by(col(WebhookDelivery.next_attempt_at), col(WebhookDelivery.id))
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            # Each delivery is signed with its key's secrets as they are now (a redelivery
            # after a rotation gets the new ones). Looked up in one order, since a lookup may
            # delete a replaced secret: two senders never wait on each other's rows in a cycle.
            grace = self.settings.webhook_secret_grace
            keys: dict[tuple[str, str], tuple[str, ...]] = {}
            for api_key, project in sorted({_signing_key(row) for row in rows}):
                keys[api_key, project] = signing_secrets(
                    session, self.box, project, api_key or None, grace, now
                )
            userinfo = self._userinfo(session, rows)
            for row in rows:
                assert row.id is not None
                key = _signing_key(row)
                set_delivery_status(session, row, DeliveryStatus.SENDING)
                row.lease_until = lease_until
                claims.append(
                    _Claim(
                        id=row.id,
                        number=row.number,
                        job_id=row.job_id,
                        message_id=row.message_id,
                        url=with_userinfo(row.url, None),
                        body=row.body,
                        lease_until=lease_until,
                        secrets=keys[key],
                        userinfo=userinfo.get(row.job_id),
                    )
                )
        return claims

    def _userinfo(self, session: Session, rows: Sequence[WebhookDelivery]) -> dict[str, str]:
        """The webhook userinfo of the rows' jobs that have one (stored as ``***`` in their
        URLs), decrypted, by job id."""
        job_ids = {row.job_id for row in rows if userinfo_of(row.url)}
        if not job_ids:
            return {}
        found = session.exec(
            select(Job.id, Job.webhook_auth_ciphertext).where(col(Job.id).in_(job_ids))
        ).all()
        opened = {job_id: open_userinfo(self.box, ciphertext) for job_id, ciphertext in found}
        return {job_id: userinfo for job_id, userinfo in opened.items() if userinfo}

    def _next_wait(self) -> float:
        """Seconds until the next delivery falls due (a retry, or a lease running out), at most
        the poll interval; a freed slot or a new delivery wakes the loop sooner."""
        poll = self.settings.poll_interval
        if self._free_slots() <= 0:
            return poll
        with self.db.read() as session:
            pending = session.exec(
                select(sa.func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status == DeliveryStatus.PENDING
                )
            ).one()
            leased = session.exec(
                select(sa.func.min(WebhookDelivery.lease_until)).where(
                    WebhookDelivery.status == DeliveryStatus.SENDING
                )
            ).one()
        times = [t for t in (pending, leased) if t is not None]
        if not times:
            return poll
        return min(max((min(times) - utcnow()).total_seconds(), MIN_WAIT_SECONDS), poll)

    def _deliver(self, claim: _Claim) -> None:
        """One send and its record (on a pool thread)."""
        try:
            self._record(claim, self._send(claim))
        except Exception as exc:
            # The row stays ``sending``: it is sent again once its lease runs out.
            if isinstance(exc, DatabaseUnavailable):
                # No traceback: the database's trouble is no bug of ours.
                logger.warning(
                    "could not record webhook delivery %d of job %s (%s); "
                    "it is sent again once its lease runs out",
                    claim.number,
                    claim.job_id,
                    exc.reason,
                    extra={"action": "webhook_unrecorded", "job_id": claim.job_id},
                )
            else:
                logger.exception(
                    "could not record a webhook attempt",
                    extra={"action": "webhook_error", "job_id": claim.job_id},
                )
        finally:
            with self._lock:
                self._in_flight -= 1
            self.hub.publish_local(WEBHOOKS)

    def _send(self, claim: _Claim) -> _Result:
        timestamp = int(time.time())
        headers = {
            "webhook-id": claim.message_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(
                claim.secrets, claim.message_id, timestamp, claim.body
            ),
            "content-type": "application/json",
        }
        started = time.monotonic()
        status_code = None
        error = None
        final = False
        try:
            # Streamed and closed unread: only the status matters, and a large or slow
            # answer body must not hold the slot.
            with self._client.stream(
                "POST",
                claim.url,
                content=claim.body.encode(),
                headers=headers,
                auth=basic_auth(claim.userinfo),
            ) as response:
                status_code = response.status_code
        except OutboundRefused as exc:
            error, final = f"not sent: {exc}", True
        except Exception as exc:
            error = describe_error(exc, claim.url, claim.userinfo)
        if status_code is not None and not 200 <= status_code < 300:
            error = f"the receiver answered HTTP {status_code}"
            if 300 <= status_code < 400:
                error += " (redirects are not followed)"
        return _Result(status_code, error, round((time.monotonic() - started) * 1000, 1), final)

    def _record(self, claim: _Claim, result: _Result) -> None:
        now = utcnow()
        with self.db.transaction() as session:
            row = session.exec(
                select(WebhookDelivery).where(WebhookDelivery.id == claim.id).with_for_update()
            ).first()
            # Another sender took the row over after this one's lease ran out: its record wins.
            if (
                row is None
                or row.status != DeliveryStatus.SENDING
                or row.lease_until != claim.lease_until
            ):
                return
            row.attempts += 1
            row.attempt_log = [
                *row.attempt_log,
                {
                    "time": now.isoformat(),
                    "status_code": result.status_code,
                    "duration_ms": result.duration_ms,
                    "error": result.error,
                },
            ]
            row.last_status_code = result.status_code
            row.last_error = result.error
            row.lease_until = None
            event, detail = self._outcome(session, row, result, now)
            job = session.exec(select(Job).where(Job.id == row.job_id)).first()
            if event is not None and job is not None:
                jobs.record(session, job, event, detail, self.hub)

    def _outcome(
        self, session: Session, row: WebhookDelivery, result: _Result, now: datetime
    ) -> tuple[EventType | None, dict[str, Any]]:
        """Move ``row`` on after an attempt; the job event to record, if any."""
        if result.ok:
            set_delivery_status(session, row, DeliveryStatus.DELIVERED)
            lag = (now - row.create_time).total_seconds()
            after_commit(session, lambda: _count_attempt("delivered", lag))
            row.delivered_time = now
            row.next_attempt_at = None
            detail = {"delivery": row.number, "status_code": result.status_code}
            return EventType.WEBHOOK_DELIVERED, {**detail, "attempts": row.attempts}
        retry_at = None
        if not result.final:
            retry_at = next_attempt(row.attempts, row.create_time, now, self.settings)
        if retry_at is not None:
            after_commit(session, lambda: _count_attempt("retry"))
            set_delivery_status(session, row, DeliveryStatus.PENDING)
            row.next_attempt_at = retry_at
            return None, {}
        set_delivery_status(session, row, DeliveryStatus.FAILED)
        after_commit(session, lambda: _count_attempt("failed"))
        row.next_attempt_at = None
        logger.warning(
            "webhook delivery %d of job %s failed after %d attempts",
            row.number,
            row.job_id,
            row.attempts,
            extra={"action": "webhook_failed", "job_id": row.job_id},
        )
        return EventType.WEBHOOK_FAILED, {
            "delivery": row.number,
            "attempts": row.attempts,
            "last_status_code": row.last_status_code,
            "last_error": row.last_error,
        }


def _count_attempt(outcome: str, lag: float | None = None) -> None:
    telemetry.WEBHOOK_ATTEMPTS.labels(outcome).inc()
    if lag is not None:
        telemetry.WEBHOOK_LAG.observe(lag)
