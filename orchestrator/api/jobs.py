"""``/v1/projects/{project}/jobs``: submit, list, read, cancel, delete; events, logs and live
streams."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.process import Services
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.common import Page
from orchestrator.schemas.jobs import JobCreate, JobEventPublic, JobPublic
from orchestrator.services import job_queries, jobs, outbound, projects, retention
from orchestrator.storage.models import Job, JobEvent, JobLog
from orchestrator.wakeups.topics import job_topic

router = APIRouter(
    prefix="/v1/projects/{project}/jobs",
    tags=["jobs"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)

KEEPALIVE_SECONDS = 15.0

# The stream's 200 in the OpenAPI document: each event's `data` is a JobEventPublic as JSON.
EVENT_STREAM = {
    "description": "Server-sent events, one per job event, until the job ends",
    "content": {
        "text/event-stream": {
            "itemSchema": {
                "type": "object",
                "required": ["id", "event", "data"],
                "properties": {
                    "id": {"type": "string"},
                    "event": {"type": "string"},
                    "data": {
                        "type": "string",
                        "contentMediaType": "application/json",
                        "contentSchema": {
                            "$ref": f"#/components/schemas/{JobEventPublic.__name__}"
                        },
                    },
                },
            }
        }
    },
}


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    responses=responses(400, 409, 413, 422),
)
def submit_job(
    project: str,
    body: JobCreate,
    services: ServicesDep,
    actor: ProjectActorDep,
    response: Response,
) -> JobPublic:
    """Submit a job: queued now, or scheduled when ``schedule_at`` is in the future."""
    outbound.check_submission(services.outbound, body)
    with services.db.transaction() as session:
        job = jobs.submit(
            session,
            services.box,
            services.hub,
            project,
            body,
            policy=services.policy,
            limits=services.limits,
            actor=actor,
        )
    response.headers["Location"] = f"/v1/projects/{project}/jobs/{job.id}"
    return JobPublic.from_row(job)


@router.get("", response_model=Page[JobPublic], responses=responses(400))
def list_jobs(
    project: str,
    services: ServicesDep,
    queue: str | None = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> Page[JobPublic]:
    """The project's jobs, newest first; pass ``next_cursor`` back as ``cursor`` for more."""
    with services.db.read() as session:
        rows, next_cursor = job_queries.list_jobs(
            session, project, queue=queue, status=status, limit=limit, cursor=cursor
        )
    return Page(items=[JobPublic.from_row(j) for j in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobPublic)
def get_job(project: str, job_id: str, services: ServicesDep) -> JobPublic:
    """One job."""
    with services.db.read() as session:
        projects.get(session, project)
        return JobPublic.from_row(job_queries.get(session, project, job_id))


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=responses(409))
def cancel_job(
    project: str, job_id: str, services: ServicesDep, actor: ProjectActorDep
) -> JobPublic:
    """Cancel: at once when waiting; a running job is stopped (SIGTERM, grace, SIGKILL)."""
    with services.db.transaction() as session:
        projects.get(session, project)
        job = jobs.cancel(session, services.hub, project, job_id, actor)
    return JobPublic.from_row(job)


@router.delete("/{job_id}", status_code=204, responses=responses(409))
def delete_job(
    project: str, job_id: str, services: ServicesDep, actor: ProjectActorDep
) -> Response:
    """Delete a finished job now, with its events, logs and webhook deliveries (409 while it
    is not finished: cancel it first). Retention does the same for old jobs."""
    with services.db.transaction() as session:
        projects.get(session, project)
        retention.delete_job(session, project, job_id, actor)
    return Response(status_code=204)


@router.get("/{job_id}/events", response_model=Page[JobEventPublic])
def list_events(project: str, job_id: str, services: ServicesDep) -> Page[JobEventPublic]:
    """The job's events, oldest first."""
    with services.db.read() as session:
        projects.get(session, project)
        job_queries.get(session, project, job_id)
        rows = job_queries.events(session, job_id)
    return Page(items=[JobEventPublic.from_row(e) for e in rows])


def _job(services: Services, project: str, job_id: str) -> Job:
    with services.db.read() as session:
        projects.get(session, project)
        return job_queries.get(session, project, job_id)


def _logs_after(
    services: Services, project: str, job_id: str, after: int, attempt: int | None
) -> tuple[JobStatus, list[JobLog]]:
    # Status first: logs are committed before the terminal status, so a terminal status read
    # here means the logs read next are complete.
    with services.db.read() as session:
        status = job_queries.get(session, project, job_id).status
        return status, job_queries.logs(session, job_id, after, attempt)


async def _follow_logs(
    services: Services, project: str, job_id: str, attempt: int | None
) -> AsyncIterator[str]:
    after = 0
    topic = job_topic(job_id)
    while True:
        seen = services.hub.version(topic)
        status, rows = await run_in_threadpool(
            _logs_after, services, project, job_id, after, attempt
        )
        for row in rows:
            assert row.id is not None
            after = row.id
            yield row.text
        if rows:
            continue
        if status.terminal:
            return
        await services.hub.wait_async(topic, seen, services.settings.poll_interval)


@router.get("/{job_id}/logs", response_class=PlainTextResponse, responses=responses(400))
async def get_logs(
    project: str,
    job_id: str,
    services: ServicesDep,
    follow: bool = False,
    attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
) -> Response:
    """The job's output as text (all attempts, or one); ``follow=true`` streams until it ends."""
    await run_in_threadpool(_job, services, project, job_id)
    if follow:
        return StreamingResponse(
            _follow_logs(services, project, job_id, attempt),
            media_type="text/plain; charset=utf-8",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return StreamingResponse(
        _stored_logs(services, job_id, attempt), media_type="text/plain; charset=utf-8"
    )


async def _stored_logs(services: Services, job_id: str, attempt: int | None) -> AsyncIterator[str]:
    """Every stored log batch, read a page at a time so a large log never sits in memory."""

    def page(after: int) -> list[JobLog]:
        with services.db.read() as session:
            return job_queries.logs(session, job_id, after, attempt)

    after = 0
    while rows := await run_in_threadpool(page, after):
        for row in rows:
            yield row.text
        assert rows[-1].id is not None
        after = rows[-1].id


def _events_after(
    services: Services, project: str, job_id: str, after: int
) -> tuple[JobStatus, list[JobEvent]]:
    with services.db.read() as session:
        status = job_queries.get(session, project, job_id).status
        return status, job_queries.events(session, job_id, after)


def _sse(event: JobEventPublic) -> str:
    data = json.dumps(event.model_dump(mode="json"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


async def _follow_events(
    services: Services, project: str, job_id: str, after: int
) -> AsyncIterator[str]:
    topic = job_topic(job_id)
    while True:
        seen = services.hub.version(topic)
        status, rows = await run_in_threadpool(_events_after, services, project, job_id, after)
        for row in rows:
            event = JobEventPublic.from_row(row)
            after = event.id
            yield _sse(event)
        if status.terminal and not rows:
            return
        if rows:
            continue
        if not await services.hub.wait_async(topic, seen, KEEPALIVE_SECONDS):
            yield ": keepalive\n\n"


# StreamingResponse has no media type of its own, so FastAPI adds no schema to EVENT_STREAM.
@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: EVENT_STREAM, **responses(400)},
)
async def stream_job(
    project: str,
    job_id: str,
    services: ServicesDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """Server-sent events: every event of the job as it happens, closing at a terminal state.

    Each message's ``event`` is the event type and its ``data`` the event with the job's status.
    Reconnect with ``Last-Event-ID`` to resume after the last event seen.
    """
    await run_in_threadpool(_job, services, project, job_id)
    return StreamingResponse(
        _follow_events(services, project, job_id, last_event_id or 0),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
