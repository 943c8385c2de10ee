"""Webhooks: a job's deliveries and their redelivery; a project's signing secret (read, rotate)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from orchestrator.api.deps import ActorDep, ProjectActorDep, ServicesDep
from orchestrator.api.errors import responses
from orchestrator.rules.masking import public_url
from orchestrator.schemas.common import Page
from orchestrator.schemas.webhooks import (
    WebhookAttemptPublic,
    WebhookDeliveryPublic,
    WebhookSecretPublic,
)
from orchestrator.services import job_queries, projects, webhook_secrets, webhooks
from orchestrator.storage.models import WebhookDelivery

router = APIRouter(tags=["webhooks"], responses=responses(401, 403, 404))

DeliveryNumber = Annotated[int, Path(ge=1, le=1_000_000)]


def _public(row: WebhookDelivery) -> WebhookDeliveryPublic:
    # The body is left out: the job's own read shows the same (masked) JSON.
    return WebhookDeliveryPublic(
        number=row.number,
        message_id=row.message_id,
        event_type=row.event_type,
        url=public_url(row.url),
        status=row.status,
        attempts=row.attempts,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        attempt_log=[WebhookAttemptPublic(**entry) for entry in row.attempt_log],
        redelivery_of=row.redelivery_of,
        create_time=row.create_time,
        next_attempt_at=row.next_attempt_at,
        delivered_time=row.delivered_time,
    )


@router.get(
    "/v1/projects/{project}/jobs/{job_id}/deliveries",
    response_model=Page[WebhookDeliveryPublic],
)
def list_webhook_deliveries(
    project: str, job_id: str, services: ServicesDep, actor: ProjectActorDep
) -> Page[WebhookDeliveryPublic]:
    """The job's webhook deliveries, oldest first, each with its attempts."""
    with services.db.read() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        rows = webhooks.deliveries(session, job.id)
    return Page(items=[_public(row) for row in rows])


@router.post(
    "/v1/projects/{project}/jobs/{job_id}/deliveries/{number}/redeliver",
    status_code=202,
    response_model=WebhookDeliveryPublic,
    responses=responses(400, 409),
)
def redeliver_webhook(
    project: str,
    job_id: str,
    number: DeliveryNumber,
    services: ServicesDep,
    actor: ProjectActorDep,
) -> WebhookDeliveryPublic:
    """Send a delivery again: a new delivery with the same ``webhook-id`` and body, signed
    anew as any delivery sent now (the current secret, and the one a rotation replaced while
    its grace lasts). 409 when the job has no webhook."""
    with services.db.transaction() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        delivery = webhooks.redeliver(session, job, number, services.hub)
    return _public(delivery)


def _secret_access(project: str, actor: ActorDep) -> None:
    # The secret lets its holder forge webhooks: a read-only token may not see it.
    actor.check(project, write=True)


@router.get("/v1/projects/{project}/webhook-secret", response_model=WebhookSecretPublic)
def get_webhook_secret(project: str, services: ServicesDep, actor: ActorDep) -> WebhookSecretPublic:
    """The project's webhook signing secret (made on first use); needs a token that may write
    in the project."""
    _secret_access(project, actor)
    with services.db.transaction() as session:
        projects.get(session, project)
        secret = webhook_secrets.reveal_project_secret(session, services.box, project, actor)
        until = webhook_secrets.previous_secret_until(
            session, project, services.settings.webhook_secret_grace
        )
    return WebhookSecretPublic(secret=secret, previous_secret_until=until)


@router.post("/v1/projects/{project}/webhook-secret", response_model=WebhookSecretPublic)
def rotate_webhook_secret(
    project: str, services: ServicesDep, actor: ActorDep
) -> WebhookSecretPublic:
    """Replace the project's signing secret: deliveries sent from now on are signed with the
    new one and, until ``previous_secret_until`` (``ORCH_WEBHOOK_SECRET_GRACE`` after now),
    with the one it replaced too, so receivers move to the new one without a cutover.
    Rotating again within that time keeps only the secret this rotation replaces."""
    _secret_access(project, actor)
    with services.db.transaction() as session:
        projects.get(session, project)
        secret = webhook_secrets.rotate_secret(session, services.box, project, actor)
        until = webhook_secrets.previous_secret_until(
            session, project, services.settings.webhook_secret_grace
        )
    return WebhookSecretPublic(secret=secret, previous_secret_until=until)
