"""Job webhooks (Standard Webhooks): the outbox of deliveries (``webhook_sender.py`` sends
them, signed through ``webhook_secrets``) and the credentials of webhook URLs.

A delivery row is written in the same transaction as the job's terminal state (``enqueue``), so
a committed end always has its message and a restart loses none. Nothing here writes a secret
(the signing secret, a URL's password, a header) to a row, an event or a log: a webhook URL is
stored with ``***`` for its userinfo, which is kept apart, encrypted (``seal_url``).
"""

from __future__ import annotations

import json
import logging
import uuid

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, NotFound
from orchestrator.rules.delivery_states import DeliveryStatus, can_delivery_transition
from orchestrator.rules.masking import public_url, userinfo_of, with_userinfo
from orchestrator.services import job_queries, salad
from orchestrator.storage.db import after_commit
from orchestrator.storage.models import (
    Job,
    Schedule,
    UnsealedWebhookCredentials,
    WebhookDelivery,
    utcnow,
)
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import WEBHOOKS

logger = logging.getLogger(__name__)

# --- credentials in a webhook URL ------------------------------------------------------------

USERINFO = "userinfo"  # the key of the encrypted mapping


def seal_url(box: SecretBox, url: str | None) -> tuple[str | None, str | None]:
    """``url`` as stored and shown, its userinfo replaced by ``***``, and that userinfo
    encrypted (None when it has none); ``unseal_url`` puts it back."""
    userinfo = userinfo_of(url) if url else None
    if url is None or userinfo is None:
        return url, None
    return public_url(url), box.encrypt({USERINFO: userinfo})


def open_userinfo(box: SecretBox, ciphertext: str | None) -> str | None:
    """The userinfo ``seal_url`` encrypted; None for no ciphertext."""
    return box.decrypt(ciphertext)[USERINFO] if ciphertext else None


def unseal_url(box: SecretBox, url: str, ciphertext: str | None) -> str:
    """The URL as it was given: ``url`` as ``seal_url`` stored it, with its userinfo back."""
    userinfo = open_userinfo(box, ciphertext)
    return url if userinfo is None else with_userinfo(url, userinfo)


def seal_migrated_credentials(session: Session, box: SecretBox) -> int:
    """Encrypt the webhook userinfo migration 0007 took out of older rows (it has no key) into
    their job's or schedule's ``webhook_auth_ciphertext``, and delete the clear rows; how many.

    Call it in a write transaction as a server starts. The rows are locked, so servers starting
    together seal each once.
    """
    rows = session.exec(select(UnsealedWebhookCredentials).with_for_update()).all()
    if not rows:
        return 0
    connection = session.connection()
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # Deleted on SQLite, a row's bytes stay in the file until reused: overwrite them.
        previous = connection.exec_driver_sql("PRAGMA secure_delete").scalar_one()
        connection.exec_driver_sql("PRAGMA secure_delete = ON")
    for row in rows:
        ciphertext = box.encrypt({USERINFO: row.userinfo})
        if row.job_id is not None:
            owner: sa.Update = sa.update(Job).where(col(Job.id) == row.job_id)
        else:
            owner = sa.update(Schedule).where(col(Schedule.id) == row.schedule_id)
        session.execute(owner.values(webhook_auth_ciphertext=ciphertext))
    ids = [row.id for row in rows]
    session.execute(
        sa.delete(UnsealedWebhookCredentials).where(col(UnsealedWebhookCredentials.id).in_(ids))
    )
    if sqlite:
        connection.exec_driver_sql(f"PRAGMA secure_delete = {int(previous)}")
    return len(rows)


# --- the outbox ----------------------------------------------------------------------------


def _next_number(session: Session, job_id: str) -> int:
    highest = session.exec(
        select(sa.func.max(WebhookDelivery.number)).where(WebhookDelivery.job_id == job_id)
    ).one()
    return (highest or 0) + 1


def _wake_after_commit(session: Session, hub: Hub | None) -> None:
    if hub is not None:
        after_commit(session, lambda: hub.publish(WEBHOOKS))


def enqueue(session: Session, job: Job, hub: Hub | None) -> None:
    """Write the webhook message of the job's terminal state, in the caller's transaction.

    The body is the job as the API it was submitted through shows it (secrets masked), fixed
    now, and signed with that API's key (the project's for the native API); the sender is woken
    after commit.
    """
    assert job.webhook is not None
    signing_key = None
    if job.api == salad.SALAD:
        body = salad.job_json(session, job)
        signing_key = salad.SALAD
    else:
        body = job_queries.public(session, job).model_dump(mode="json")
    now = utcnow()
    session.add(
        WebhookDelivery(
            job_id=job.id,
            number=_next_number(session, job.id),
            project=job.project,
            message_id="msg_" + uuid.uuid4().hex,
            event_type=f"job.{job.status}",
            url=job.webhook,
            signing_key=signing_key,
            # As the API writes JSON: compact, UTF-8.
            body=json.dumps(body, separators=(",", ":"), ensure_ascii=False),
            status=DeliveryStatus.PENDING,
            next_attempt_at=now,
            create_time=now,
        )
    )
    _wake_after_commit(session, hub)


def set_delivery_status(
    session: Session, delivery: WebhookDelivery, status: DeliveryStatus
) -> None:
    """Move ``delivery`` to ``status``: the one writer of ``WebhookDelivery.status`` once the
    delivery is written. Conflict when a delivery's life cycle does not allow the move."""
    if delivery.status != status and not can_delivery_transition(delivery.status, status):
        raise Conflict(
            f"webhook delivery {delivery.id} cannot go from {delivery.status} to {status}",
            field="status",
        )
    delivery.status = status
    session.add(delivery)


def deliveries(session: Session, job_id: str) -> list[WebhookDelivery]:
    """The job's deliveries, oldest first."""
    statement = (
        select(WebhookDelivery)
        .where(WebhookDelivery.job_id == job_id)
        .order_by(col(WebhookDelivery.number))
    )
    return list(session.exec(statement).all())


def redeliver(session: Session, job: Job, number: int, hub: Hub | None) -> WebhookDelivery:
    """Send delivery ``number`` again, as a new delivery with the same message id and body.

    NotFound for an unknown number; Conflict when the job has no webhook.
    """
    if job.webhook is None:
        raise Conflict(f"job {job.id} has no webhook", field="webhook")
    # The job row's lock makes the next number the only one.
    session.exec(select(Job.id).where(Job.id == job.id).with_for_update()).first()
    original = session.exec(
        select(WebhookDelivery).where(
            WebhookDelivery.job_id == job.id, WebhookDelivery.number == number
        )
    ).first()
    if original is None:
        raise NotFound(f"job {job.id} has no delivery {number}", field="number")
    now = utcnow()
    delivery = WebhookDelivery(
        job_id=job.id,
        number=_next_number(session, job.id),
        project=original.project,
        message_id=original.message_id,
        event_type=original.event_type,
        url=job.webhook,
        body=original.body,
        signing_key=original.signing_key,
        status=DeliveryStatus.PENDING,
        next_attempt_at=now,
        redelivery_of=number,
        create_time=now,
    )
    session.add(delivery)
    session.flush()
    _wake_after_commit(session, hub)
    return delivery
