"""SaladCloud's Queue API, drop-in, under ``/api/public``: a client changes only its base URL.

``{organization_name}`` is ``ORCH_SALAD_ORGANIZATION`` (any name when unset), ``{project_name}``
our project, a queue our queue and a job our job (``orchestrator/salad.py`` maps them). Errors are
RFC 7807 ``application/problem+json``; bad input is a 400. Once a job is stored the answer is
never a 5xx: the official SDK sends a POST again on a 5xx, which would make a second job.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import Session

from orchestrator.api.compat.errors import CompatRoute
from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.error_shapes import PROBLEM, SALAD
from orchestrator.api.errors import status_for
from orchestrator.api.idempotency import IdempotencyKeyDep, answer_of, create_once
from orchestrator.errors import Conflict, LimitExceeded, NotFound, OrchestratorError
from orchestrator.process import Services
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.queues import QueueCreate, QueueUpdate
from orchestrator.schemas.salad import (
    ProblemDetails,
    QueueCollection,
    QueueJob,
    QueueJobCollection,
    QueueJobPrototype,
    QueuePatch,
    QueuePrototype,
    SaladQueue,
    WebhookSecretKey,
)
from orchestrator.services import job_queries, jobs, outbound, projects, queues, salad
from orchestrator.services.audit import Actor
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.services.webhook_secrets import reveal_api_secret, rotate_api_secret
from orchestrator.storage.models import Job, Queue

PROBLEM_SCHEMA = "#/components/schemas/ProblemDetails"
MERGE_PATCH = "application/merge-patch+json"
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
DESCRIPTIONS = {
    400: "The request is not valid: `detail` names the field and says why.",
    401: "No `Salad-Api-Key` was sent, or it is not a valid token.",
    403: "The token may not do this (read-only, another project, or not an admin's).",
    404: "The organization, project, queue or job does not exist.",
    409: "The request conflicts with the current state (a queue name taken, a busy queue), or "
    "the project holds as many queues as the server allows.",
    413: "The request body, or a part of it, is larger than the server's limit.",
    415: "The request has a body that is not JSON (its `Content-Type`).",
    422: "The `Idempotency-Key` was used with another request: `detail` says so.",
}

Name = Annotated[str, Path(min_length=2, max_length=63, pattern=NAME_PATTERN)]
JobId = Annotated[str, Path(min_length=1, max_length=36)]


class SaladRoute(CompatRoute):
    """A route answering errors as SaladCloud does: problem+json, bad input with 400."""

    shape = SALAD

    def domain_error(self, exc: OrchestratorError) -> tuple[int, str]:
        """The native refusal; a limit exceeded is bad input, and a missing key is named as a
        SaladCloud client sends it."""
        if isinstance(exc, LimitExceeded):
            return 400, exc.message
        message = exc.message
        if status_for(exc) == 401:
            message = message.replace("'Authorization: Bearer <token>'", "'Salad-Api-Key'")
        return status_for(exc), message


def _documented(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": ProblemDetails,
            "description": DESCRIPTIONS[status],
            # What is sent; FastAPI also lists the model under application/json.
            "content": {PROBLEM: {"schema": {"$ref": PROBLEM_SCHEMA}}},
        }
        for status in statuses
    }


def _created(example: str) -> dict[int | str, dict[str, Any]]:
    location = {"description": f"Where it is, e.g. `{example}`", "schema": {"type": "string"}}
    return {201: {"description": "Created", "headers": {"Location": location}}}


router = APIRouter(
    prefix=SALAD.prefix + "/organizations/{organization_name}",
    tags=["compat: SaladCloud"],
    route_class=SaladRoute,
    responses=_documented(400, 401, 403, 404, 413),
)


def _organization(services: Services, organization_name: str) -> None:
    configured = services.settings.salad_organization
    if configured is not None and organization_name != configured:
        raise NotFound(f"organization '{organization_name}' not found", field="organization_name")


def _queue(session: Session, project: str, name: str) -> Queue:
    projects.get(session, project)
    return queues.get(session, project, name)


def _job(session: Session, queue: Queue, job_id: str) -> Job:
    job = job_queries.get(session, queue.project, job_id)
    if job.queue != queue.name:
        raise NotFound(f"job '{job_id}' not found in queue '{queue.name}'", field="job")
    return job


def _allowed(
    services: Services, actor: Actor, organization: str, project: str, *, write: bool
) -> None:
    _organization(services, organization)
    actor.check(project, write=write)


@router.get(
    "/projects/{project_name}/queues",
    response_model=QueueCollection,
    response_model_exclude_unset=True,
)
def list_queues(
    organization_name: Name, project_name: Name, services: ServicesDep, actor: ActorDep
) -> QueueCollection:
    """The project's queues."""
    _allowed(services, actor, organization_name, project_name, write=False)
    with services.db.read() as session:
        projects.get(session, project_name)
        return QueueCollection(
            items=[
                salad.queue(session, row, organization_name, services.settings.runner_lease)
                for row in queues.list_all(session, project_name)
            ]
        )


@router.post(
    "/projects/{project_name}/queues",
    response_model=SaladQueue,
    response_model_exclude_unset=True,
    status_code=201,
    responses={
        **_created("/organizations/acme-corp/projects/dev-env/queues/q1"),
        **_documented(409, 415),
    },
)
def create_queue(
    organization_name: Name,
    project_name: Name,
    body: QueuePrototype,
    response: Response,
    services: ServicesDep,
    actor: ActorDep,
) -> SaladQueue:
    """A new queue. It gets its default definition through the native API or CLI; until then
    its jobs wait."""
    _allowed(services, actor, organization_name, project_name, write=True)
    request = QueueCreate(
        name=body.name, display_name=body.display_name or "", description=body.description or ""
    )
    with services.db.transaction() as session:
        projects.get(session, project_name)
        row = queues.create(session, project_name, request, actor, caps=services.caps)
        public = salad.queue(session, row, organization_name, services.settings.runner_lease)
    response.headers["Location"] = (
        f"/organizations/{organization_name}/projects/{project_name}/queues/{row.name}"
    )
    return public


@router.get(
    "/projects/{project_name}/queues/{queue_name}",
    response_model=SaladQueue,
    response_model_exclude_unset=True,
)
def get_queue(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    services: ServicesDep,
    actor: ActorDep,
) -> SaladQueue:
    """One queue, with its worker container groups and how many jobs wait in it."""
    _allowed(services, actor, organization_name, project_name, write=False)
    with services.db.read() as session:
        queue = _queue(session, project_name, queue_name)
        return salad.queue(session, queue, organization_name, services.settings.runner_lease)


@router.patch(
    "/projects/{project_name}/queues/{queue_name}",
    response_model=SaladQueue,
    response_model_exclude_unset=True,
    responses=_documented(415),
)
def update_queue(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    body: Annotated[QueuePatch, Body(media_type=MERGE_PATCH)],
    services: ServicesDep,
    actor: ActorDep,
) -> SaladQueue:
    """Change the display name or description (a JSON merge patch: ``null`` clears)."""
    _allowed(services, actor, organization_name, project_name, write=True)
    # Merge patch: a field given as null is cleared; one not given is kept.
    changes = {field: getattr(body, field) or "" for field in body.model_fields_set}
    with services.db.transaction() as session:
        _queue(session, project_name, queue_name)
        request = QueueUpdate.model_validate(changes)
        row = queues.update(session, project_name, queue_name, request, actor)
        return salad.queue(session, row, organization_name, services.settings.runner_lease)


@router.delete(
    "/projects/{project_name}/queues/{queue_name}",
    status_code=202,
    response_class=Response,
    responses={202: {"description": "Accepted: the queue is deleted."}, **_documented(409)},
)
def delete_queue(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    services: ServicesDep,
    actor: ActorDep,
) -> Response:
    """Delete a queue with no waiting or running jobs (409 otherwise: cancel them first)."""
    _allowed(services, actor, organization_name, project_name, write=True)
    with services.db.transaction() as session:
        _queue(session, project_name, queue_name)
        queues.delete(session, project_name, queue_name, actor)
    return Response(status_code=202)


# The fields of a Salad job that may be large: what one batch of a page is sized by.
SALAD_FIELDS = ("input", "metadata", "output")


@router.get(
    "/projects/{project_name}/queues/{queue_name}/jobs",
    response_model=QueueJobCollection,
    response_model_exclude_unset=True,
)
def list_queue_jobs(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    services: ServicesDep,
    actor: ActorDep,
    page: Annotated[int, Query(ge=1, le=2147483647)] = 1,
    page_size: Annotated[int, Query(ge=1, le=salad.MAX_PAGE_SIZE)] = salad.MAX_PAGE_SIZE,
) -> Response:
    """A page of the queue's jobs, newest first, each with its input, metadata and output.

    Salad's shape and paging stay whole (a page holds ``page_size`` jobs), so it is its memory
    that is bounded: jobs are read and sent a batch at a time, each batch at most
    ``ORCH_LIST_PAGE_MAX_BYTES`` at the largest its jobs can be."""
    _allowed(services, actor, organization_name, project_name, write=False)
    batch = min(page_size, job_queries.read_batch(services.settings, SALAD_FIELDS, page_size))
    # The first batch is read here, so a missing queue is still an error response.
    with services.db.read() as session:
        queue = _queue(session, project_name, queue_name)
        rows = salad.jobs_of(session, queue, offset=(page - 1) * page_size, limit=batch)
        first = [salad.job_item(session, row) for row in rows]
    last = rows[-1].seq if len(rows) == batch < page_size else None
    body = _items(services, queue, first, last, page_size - len(rows), batch)
    return StreamingResponse(body, media_type="application/json")


def _items(
    services: Services, queue: Queue, first: list[bytes], last: int | None, left: int, batch: int
) -> Iterator[bytes]:
    """A ``QueueJobCollection``: the first batch, then the page's next batches below ``last``
    (each read in its own short read, so none holds the database while the client reads)."""
    yield b'{"items":[' + b",".join(first)
    while last is not None and left > 0:
        wanted = min(batch, left)
        with services.db.read() as session:
            rows = salad.jobs_of(session, queue, before=last, limit=wanted)
            items = [salad.job_item(session, row) for row in rows]
        if items:
            yield b"," + b",".join(items)
        left -= len(rows)
        last = rows[-1].seq if len(rows) == wanted else None
    yield b"]}"


@router.post(
    "/projects/{project_name}/queues/{queue_name}/jobs",
    response_model=QueueJob,
    response_model_exclude_unset=True,
    status_code=201,
    responses={
        **_created("/organizations/acme-corp/projects/dev-env/queues/q1/jobs/<id>"),
        **_documented(415, 422),
    },
)
def create_queue_job(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    body: QueueJobPrototype,
    request: Request,
    services: ServicesDep,
    actor: ActorDep,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Submit a job: its ``input`` goes to the queue's default definition (an HTTP worker gets
    it as the POST body; a run-to-completion container at ``$ORCH_INPUT``). In a queue with no
    default definition yet, the job waits for one. With an ``Idempotency-Key``, the same
    request sent again gets the first answer again."""
    _allowed(services, actor, organization_name, project_name, write=True)
    submission = JobCreate.model_validate(
        {"queue": queue_name, "input": body.input, "metadata": body.metadata or {}}
        | ({"webhook": str(body.webhook)} if body.webhook is not None else {})
    )
    outbound.check_submission(services.outbound, submission)

    def create(session: Session) -> Answer:
        _queue(session, project_name, queue_name)
        job = jobs.submit(
            session,
            services.box,
            services.hub,
            project_name,
            submission,
            policy=services.policy,
            limits=services.limits,
            actor=actor,
            api=salad.SALAD,
            wait_for_definition=True,
        )
        # Made before the commit: after it, nothing may fail (the SDK would submit again).
        location = (
            f"/organizations/{organization_name}/projects/{project_name}"
            f"/queues/{queue_name}/jobs/{job.id}"
        )
        return answer_of(201, salad.job(session, job), exclude_unset=True, location=location)

    scope = Scope(project_name, "salad.jobs")
    return create_once(services, request, idempotency_key, scope, body, create)


@router.get(
    "/projects/{project_name}/queues/{queue_name}/jobs/{queue_job_id}",
    response_model=QueueJob,
    response_model_exclude_unset=True,
)
def get_queue_job(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    queue_job_id: JobId,
    services: ServicesDep,
    actor: ActorDep,
) -> QueueJob:
    """One job: status, events, and its output once it is done."""
    _allowed(services, actor, organization_name, project_name, write=False)
    with services.db.read() as session:
        queue = _queue(session, project_name, queue_name)
        return salad.job(session, _job(session, queue, queue_job_id))


@router.delete(
    "/projects/{project_name}/queues/{queue_name}/jobs/{queue_job_id}",
    status_code=202,
    response_class=Response,
    responses={202: {"description": "Accepted: the job is cancelled, or being stopped."}},
)
def delete_queue_job(
    organization_name: Name,
    project_name: Name,
    queue_name: Name,
    queue_job_id: JobId,
    services: ServicesDep,
    actor: ActorDep,
) -> Response:
    """Cancel a job: a waiting one at once, a running one is stopped; a finished one stays as
    it is."""
    _allowed(services, actor, organization_name, project_name, write=True)
    with services.db.transaction() as session:
        queue = _queue(session, project_name, queue_name)
        job = _job(session, queue, queue_job_id)
        if not job.status.terminal:
            try:
                jobs.cancel(session, services.hub, project_name, job.id, actor)
            except Conflict:
                pass  # it finished meanwhile: nothing to cancel
    return Response(status_code=202)


def _key_access(services: Services, actor: Actor, organization: str) -> None:
    _organization(services, organization)
    # The key lets its holder forge the webhooks of every project: admins only.
    actor.require_admin()


@router.get("/webhook-secret-key", response_model=WebhookSecretKey)
def get_webhook_secret_key(
    organization_name: Name, services: ServicesDep, actor: ActorDep
) -> WebhookSecretKey:
    """The key that signs the webhooks of jobs submitted here (made on first use); verify
    them with ``svix``. Needs an admin token."""
    _key_access(services, actor, organization_name)
    with services.db.transaction() as session:
        key = reveal_api_secret(session, services.box, salad.SALAD, actor)
    return WebhookSecretKey(secret_key=key)


@router.post("/webhook-secret-key", response_model=WebhookSecretKey)
def update_webhook_secret_key(
    organization_name: Name, services: ServicesDep, actor: ActorDep
) -> WebhookSecretKey:
    """Replace the key; deliveries sent from now on are signed with the new one and, for
    ``ORCH_WEBHOOK_SECRET_GRACE``, with the one it replaced too. Needs an admin token."""
    _key_access(services, actor, organization_name)
    with services.db.transaction() as session:
        key = rotate_api_secret(session, services.box, salad.SALAD, actor)
    return WebhookSecretKey(secret_key=key)
