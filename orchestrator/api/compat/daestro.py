"""Daestro's drop-in client API under ``/v1/client``: submit, read and cancel jobs in Daestro's
fields, states and ``{"ok": ..., ...}`` envelope, over the native job service.

A Daestro ``job_definition`` (``project::name:version``) and ``job_queue`` (``project::queue``)
name one project's definition and queue; ``container_env`` entries marked ``sensitive`` become
the job's secret env (write-only), the others its plain env. The job's id is chosen before the
submit so it can be in the container's environment as ``DAESTRO_JOB_ID``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from sqlmodel import Session, select

from orchestrator.api.compat.errors import CompatRoute
from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.error_shapes import DAESTRO
from orchestrator.api.errors import ERROR_DESCRIPTIONS, status_for, validation_message
from orchestrator.api.idempotency import IdempotencyKeyDep, answer_of, create_once
from orchestrator.errors import IdempotencyKeyReused, InvalidRequest, NotFound, OrchestratorError
from orchestrator.rules.fields import (
    storable,
)
from orchestrator.rules.ids import time_ordered_id
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.schemas.daestro import (
    DaestroAccepted,
    DaestroError,
    DaestroJob,
    DaestroJobCreate,
    DaestroJobId,
    DaestroJobResponse,
    DaestroState,
    parse_definition,
    parse_queue,
)
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import job_queries, jobs
from orchestrator.services.audit import Actor
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.storage.models import Job, JobEvent

JOB_ID_ENV = "DAESTRO_JOB_ID"
QUEUE_NAME_ENV = "DAESTRO_JOB_QUEUE_NAME"
# The native fields, as Daestro's request names them (for the errors the services raise).
_FIELDS = {
    "definition": "job_definition",
    "queue": "job_queue",
    "name": "name",
    "command": "container_cmd",
    "parameters": "container_cmd_parameter",
    "env": "container_env",
    "secret_env": "container_env",
    "schedule_at": "schedule_at",
}
_WORDS = (
    (re.compile(r"\b(?:secret_)?env\."), "container_env."),
    (re.compile(r"\bparameters\."), "container_cmd_parameter."),
    (re.compile(r"'parameters'"), "'container_cmd_parameter'"),
    (re.compile(r"^command uses"), "container_cmd uses"),
)


def daestro_state(job: Job, events: Sequence[JobEvent] = ()) -> DaestroState:
    """Pure: the Daestro state of ``job``. A failed job's ``events`` tell a timeout (``timeout``)
    and an attempt whose container never started (``error``) from a failed run (``failed``)."""
    if job.status in (JobStatus.STARTING, JobStatus.RUNNING) and job.cancel_requested:
        return "cancelling"
    if job.status is JobStatus.FAILED:
        last = {event.type for event in events if event.attempt == job.attempt}
        if EventType.TIMED_OUT in last:
            return "timeout"
        return "failed" if EventType.STARTED in last else "error"
    states: dict[JobStatus, DaestroState] = {
        JobStatus.PENDING: "submitted",
        JobStatus.SCHEDULED: "submitted",
        JobStatus.QUEUED: "runnable",
        JobStatus.STARTING: "starting",
        JobStatus.RUNNING: "running",
        JobStatus.SUCCEEDED: "completed",
        JobStatus.CANCELLED: "cancelled",
    }
    return states[job.status]


def system_note(job: Job) -> str | None:
    """Pure: Daestro's free-text note on a job, our error led by the failure reason (a failed
    job's, where it has one: ``oom_killed: the container ran out of memory ...``)."""
    if job.status is JobStatus.FAILED and job.reason is not None:
        return f"{job.reason}: {job.error}" if job.error else str(job.reason)
    return job.error


def _daestro_words(exc: OrchestratorError) -> str:
    message = exc.message
    for pattern, words in _WORDS:
        message = pattern.sub(words, message)
    field = _FIELDS.get((exc.field or "").partition(".")[0])
    if field is not None and not message.startswith(tuple(_FIELDS.values())):
        message = f"{field}: {message}"
    return message


def _validation_message(exc: RequestValidationError) -> str:
    errors = []
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        if "[key]" in loc:
            # A bad name may be a value pasted in the wrong place ("TOKEN=s3cr3t"): the error
            # names the mapping, never the text.
            mapping = loc[: loc.index("[key]") - 1]
            error = {**error, "loc": mapping, "msg": f"a name is invalid: {error.get('msg')}"}
        errors.append(error)
    return validation_message(RequestValidationError(errors))[0]


def _status(exc: OrchestratorError) -> int:
    # Daestro documents one error status for bad requests: a conflict (a name in use, a job
    # already finished) and a request over a limit are bad requests to its clients. A reused
    # Idempotency-Key is a 422 as the header's draft says: Daestro has no such header, so
    # only a client that sends ours meets it.
    status = status_for(exc)
    if isinstance(exc, IdempotencyKeyReused):
        return status
    return 400 if status in (409, 422) else status


class DaestroRoute(CompatRoute):
    """A route answering errors in Daestro's shape, ``{"ok": false, "message": "..."}``."""

    shape = DAESTRO

    def validation_text(self, exc: RequestValidationError) -> str:
        """The refusal, naming a bad mapping key by its mapping only."""
        return _validation_message(exc)

    def domain_error(self, exc: OrchestratorError) -> tuple[int, str]:
        """The native refusal, in Daestro's statuses and field names."""
        return _status(exc), _daestro_words(exc)


# Daestro answers every refused request with 400, conflicts included.
_DESCRIPTIONS = {
    400: "The request is not valid, or conflicts with the job's state (a name in use, a "
    "finished job cancelled): `message` names the field and says why.",
    422: "The `Idempotency-Key` was used with another request: `message` says so.",
}


def _daestro_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {
        status: {
            "model": DaestroError,
            "description": _DESCRIPTIONS.get(status, ERROR_DESCRIPTIONS[status]),
        }
        for status in statuses
    }


router = APIRouter(
    prefix=DAESTRO.prefix,
    tags=["compat: Daestro"],
    route_class=DaestroRoute,
    responses=_daestro_responses(400, 401, 403, 404, 413),
)


def _native_request(body: DaestroJobCreate, job_id: str) -> JobCreate:
    """The native submission: sensitive env to ``secret_env``, Daestro's variables added."""
    _, name, version = parse_definition(body.job_definition)
    _, queue = parse_queue(body.job_queue)
    given = body.container_env or {}
    for reserved in (JOB_ID_ENV, QUEUE_NAME_ENV):
        if reserved in given:
            raise InvalidRequest(
                f"container_env.{reserved}: set by the server for every job",
                field=f"container_env.{reserved}",
            )
    env = {key: entry.value for key, entry in given.items() if not entry.sensitive}
    secret_env = {key: entry.value for key, entry in given.items() if entry.sensitive}
    return JobCreate(
        definition=name if version is None else f"{name}:{version}",
        queue=queue,
        name=body.name,
        parameters=body.container_cmd_parameter or {},
        command=body.container_cmd,
        env={**env, JOB_ID_ENV: job_id, QUEUE_NAME_ENV: queue},
        secret_env=secret_env,
        schedule_at=body.schedule_at,
    )


def _find(session: Session, actor: Actor, job_id: str, *, write: bool) -> Job:
    """The job with this id in any project the token may see (Daestro's paths name no project)."""
    job = None
    if storable(job_id):
        job = session.exec(select(Job).where(Job.id == job_id)).first()
    if job is None or not actor.can_see(job.project):
        raise NotFound(f"job '{job_id[:80]}' not found", field="job")
    actor.check(job.project, write=write)
    return job


def _public(session: Session, job: Job) -> DaestroJobResponse:
    events = job_queries.events(session, job.id) if job.status is JobStatus.FAILED else []
    return DaestroJobResponse(
        data=DaestroJob(
            id=job.id,
            name=job.name,
            state=daestro_state(job, events),
            system_note=system_note(job),
            schedule_at=job.schedule_at,
            created_at=job.create_time,
            updated_at=job.update_time,
        )
    )


@router.post(
    "/job",
    status_code=202,
    response_model=DaestroAccepted,
    responses=_daestro_responses(415, 422),
)
def submit_job(
    body: DaestroJobCreate,
    services: ServicesDep,
    actor: ActorDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
) -> Response:
    """Submit a job (Daestro's Job Submit): run now, or at ``schedule_at`` when it is in the
    future. Its container also gets ``DAESTRO_JOB_ID`` and ``DAESTRO_JOB_QUEUE_NAME``. With an
    ``Idempotency-Key``, the same request sent again gets the first answer again."""
    project, _, _ = parse_definition(body.job_definition)
    queue_project, _ = parse_queue(body.job_queue)
    if queue_project != project:
        raise InvalidRequest(
            f"job_queue: its project '{queue_project}' is not the job_definition's "
            f"project '{project}'",
            field="job_queue",
        )
    actor.check(project, write=True)
    job_id = time_ordered_id()
    submission = _native_request(body, job_id)

    def create(session: Session) -> Answer:
        job = jobs.submit(
            session,
            services.box,
            services.hub,
            project,
            submission,
            policy=services.policy,
            limits=services.limits,
            actor=actor,
            job_id=job_id,
        )
        return answer_of(202, DaestroAccepted(data=DaestroJobId(id=job.id)))

    scope = Scope(project, "daestro.jobs")
    return create_once(services, request, idempotency_key, scope, body, create)


@router.get("/job/{job_id}", response_model=DaestroJobResponse)
def get_job(job_id: str, services: ServicesDep, actor: ActorDep) -> DaestroJobResponse:
    """One job: its Daestro state, and in ``system_note`` why it failed."""
    with services.db.read() as session:
        return _public(session, _find(session, actor, job_id, write=False))


@router.post("/job/{job_id}/cancel", response_model=DaestroJobResponse)
def cancel_job(job_id: str, services: ServicesDep, actor: ActorDep) -> DaestroJobResponse:
    """Cancel a job: at once when it waits (``cancelled``); a running one is stopped
    (``cancelling`` until its container is gone). A finished job cannot be cancelled."""
    with services.db.transaction() as session:
        job = _find(session, actor, job_id, write=True)
        job = jobs.cancel(session, services.hub, job.project, job.id, actor)
        return _public(session, job)
