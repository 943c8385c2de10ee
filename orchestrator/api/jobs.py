"""``/v1/projects/{project}/jobs``: submit, list, read, cancel, delete; events, logs and live
streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from functools import partial
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.api.idempotency import IdempotencyKeyDep, answer_of, create_once
from orchestrator.api.live import LiveStream
from orchestrator.process import Services
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.common import Page, Time
from orchestrator.schemas.jobs import (
    DOCUMENTS,
    JobAttempt,
    JobCreate,
    JobDryRun,
    JobEventPublic,
    JobListItem,
    JobPublic,
    LogLine,
    list_fields,
    page_chunks,
)
from orchestrator.services import (
    arrays,
    dry_runs,
    job_queries,
    jobs,
    outbound,
    projects,
    retention,
)
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.storage.models import Job, JobLog
from orchestrator.streams.feed import Item
from orchestrator.streams.guard import Lease

router = APIRouter(
    prefix="/v1/projects/{project}/jobs",
    tags=["jobs"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)

# What the event stream sends after ``job_streams.KEEPALIVE_SECONDS`` without an event, and
# before it closes because its token no longer may read the job (SSE comments: clients skip them).
KEEPALIVE = b": keepalive\n\n"
TOKEN_ENDED = b": the token was revoked or no longer sees this project; the stream ends\n\n"

# The stream's 200 in the OpenAPI document. OpenAPI 3.1 describes a stream as one string (3.2's
# per-message `itemSchema` is not 3.1): the messages are in words, their data by reference.
EVENT_STREAM = {
    "description": "Server-sent events, one message per job event, until the job ends: `id` is "
    "the event's id (send it back as `Last-Event-ID` to resume), `event` its type, and `data` "
    f"the event as JSON ({JobEventPublic.__name__}, with the job's status); lines starting "
    "with `:` are comments (keep-alives).",
    "content": {
        "text/event-stream": {
            "schema": {"type": "string", "description": "A text/event-stream body."}
        }
    },
}
# The log's 200: the text as stored, or as it is written while `follow=true`; with
# `format=json`, one LogLine a line (3.1 describes the stream as one string, as above).
NDJSON = "application/x-ndjson"
LOG_TEXT = {
    "description": "The job's output as text; with `follow=true`, streamed until the job ends. "
    f"With `format=json` ({NDJSON}): one JSON object a line of output, a {LogLine.__name__} "
    "(its `attempt`, its `stream`, `stdout` or `stderr`, and its `text`).",
    "content": {
        "text/plain": {"schema": {"type": "string"}},
        NDJSON: {"schema": {"type": "string", "description": "Newline-delimited JSON."}},
    },
}


DRY_RUN = {
    "model": JobDryRun,
    "description": "With `dry_run=true`: the job that would be made and its container; "
    "nothing is stored or run",
}


@router.post(
    "",
    status_code=201,
    response_model=JobPublic,
    responses={200: DRY_RUN, **responses(400, 409, 413, 422)},
)
def submit_job(
    project: str,
    body: JobCreate,
    services: ServicesDep,
    actor: ProjectActorDep,
    request: Request,
    idempotency_key: IdempotencyKeyDep,
    dry_run: Annotated[
        bool,
        Query(
            description="Check the submission as a submit would (same errors) and answer 200 "
            "with the container its first attempt would run, storing and running nothing "
            "(an `Idempotency-Key` is neither used nor kept)."
        ),
    ] = False,
) -> Response:
    """Submit a job: queued now, or scheduled when ``schedule_at`` is in the future.

    With an ``Idempotency-Key``, the same request sent again gets the first answer again."""
    outbound.check_submission(services.outbound, body)
    if dry_run:
        with services.db.read() as session:
            shown = dry_runs.dry_run(
                session,
                services.box,
                project,
                body,
                policy=services.policy,
                limits=services.limits,
                settings=services.settings,
            )
        return JSONResponse(shown.model_dump(mode="json"))

    def create(session: Session) -> Answer:
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
        location = f"/v1/projects/{project}/jobs/{job.id}"
        return answer_of(201, job_queries.submitted(session, job, body), location=location)

    scope = Scope(project, "jobs")
    return create_once(services, request, idempotency_key, scope, body, create)


@router.get("", response_model=Page[JobListItem], responses=responses(400))
def list_jobs(
    project: str,
    services: ServicesDep,
    queue: Annotated[str | None, Query(description="Only the queue's jobs.")] = None,
    status: Annotated[JobStatus | None, Query(description="Only jobs in this status.")] = None,
    definition: Annotated[
        str | None, Query(description="Only jobs of this definition: `name` or `name:version`.")
    ] = None,
    name: Annotated[str | None, Query(description="Only jobs of this name.")] = None,
    created_after: Annotated[
        Time | None, Query(description="Only jobs created at or after this time (RFC 3339).")
    ] = None,
    created_before: Annotated[
        Time | None, Query(description="Only jobs created before this time (RFC 3339).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    fields: Annotated[
        list[str] | None,
        Query(
            description="Fields to add to each job, comma-separated: any of "
            f"{', '.join(DOCUMENTS)}. Without it a job is its summary."
        ),
    ] = None,
) -> Response:
    """The project's jobs, newest first, each a summary (``fields`` adds named ones), only
    those that match every filter given; pass ``next_cursor`` back as ``cursor`` (with the
    same filters) for more. A page ends early rather than pass ``ORCH_LIST_PAGE_MAX_BYTES``;
    ``GET .../jobs/{id}`` gives a job whole."""
    names = list_fields(fields)
    settings = services.settings
    with services.db.read() as session:
        items, next_cursor = job_queries.list_jobs(
            session,
            project,
            where=job_queries.JobFilter(
                queue=queue,
                status=status,
                definition=definition,
                name=name,
                created_after=created_after,
                created_before=created_before,
            ),
            limit=limit,
            cursor=cursor,
            fields=names,
            max_bytes=settings.list_page_max_bytes,
            batch=job_queries.read_batch(settings, names, limit),
        )
    # The items are JSON already (their size is what bounds the page): sent, not re-encoded.
    return StreamingResponse(_chunks(items, next_cursor), media_type="application/json")


async def _chunks(items: list[bytes], next_cursor: str | None) -> AsyncIterator[bytes]:
    # An async iterator: a sync one would cost a thread hand-off per chunk.
    for chunk in page_chunks(items, next_cursor):
        yield chunk


@router.get("/{job_id}", response_model=JobPublic)
def get_job(project: str, job_id: str, services: ServicesDep) -> JobPublic:
    """One job."""
    with services.db.read() as session:
        projects.get(session, project)
        return job_queries.public(session, job_queries.get(session, project, job_id))


@router.get("/{job_id}/children", response_model=Page[JobListItem], responses=responses(400))
def list_children(
    project: str,
    job_id: str,
    services: ServicesDep,
    status: Annotated[JobStatus | None, Query(description="Only children in this status.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
    fields: Annotated[
        list[str] | None,
        Query(
            description="Fields to add to each child, comma-separated: any of "
            f"{', '.join(DOCUMENTS)}."
        ),
    ] = None,
) -> Response:
    """An array job's children, highest index first (as the job list: newest first), paged
    like the job list; 404 when the job is not an array job."""
    names = list_fields(fields)
    settings = services.settings
    with services.db.read() as session:
        projects.get(session, project)
        parent = arrays.children_of(session, project, job_id)
        items, next_cursor = job_queries.list_jobs(
            session,
            project,
            where=job_queries.JobFilter(status=status, parent_id=parent.id),
            limit=limit,
            cursor=cursor,
            fields=names,
            max_bytes=settings.list_page_max_bytes,
            batch=job_queries.read_batch(settings, names, limit),
        )
    return StreamingResponse(_chunks(items, next_cursor), media_type="application/json")


@router.post("/{job_id}/cancel", response_model=JobPublic, responses=responses(409))
def cancel_job(
    project: str, job_id: str, services: ServicesDep, actor: ProjectActorDep
) -> JobPublic:
    """Cancel: at once when waiting; a running job is stopped (SIGTERM, grace, SIGKILL)."""
    with services.db.transaction() as session:
        projects.get(session, project)
        job = jobs.cancel(session, services.hub, project, job_id, actor)
        return job_queries.public(session, job)


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
def list_job_events(project: str, job_id: str, services: ServicesDep) -> Page[JobEventPublic]:
    """The job's events, oldest first."""
    with services.db.read() as session:
        projects.get(session, project)
        job_queries.get(session, project, job_id)
        rows = job_queries.events(session, job_id)
    return Page(items=[JobEventPublic.from_row(e) for e in rows])


@router.get("/{job_id}/attempts", response_model=Page[JobAttempt])
def list_job_attempts(project: str, job_id: str, services: ServicesDep) -> Page[JobAttempt]:
    """The job's attempts, first to last: runner, container, times, and how each ended
    (outcome, exit code, reason, error)."""
    with services.db.read() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        return Page(items=job_queries.attempts(session, job.id))


def _job(services: Services, project: str, job_id: str) -> Job:
    with services.db.read() as session:
        projects.get(session, project)
        return job_queries.get(session, project, job_id)


async def _log_text(batches: AsyncGenerator[list[Item]]) -> AsyncGenerator[bytes]:
    async with aclosing(batches):
        async for items in batches:
            if items:
                yield b"".join(item.data for item in items)


def _json_lines(lines: list[LogLine]) -> bytes:
    return "".join(line.model_dump_json() + "\n" for line in lines).encode()


async def _log_lines(batches: AsyncGenerator[list[Item]]) -> AsyncGenerator[bytes]:
    async with aclosing(batches):
        async for items in batches:
            if items:
                yield b"".join(
                    _json_lines(
                        LogLine.lines(item.id, item.attempt, item.stream, item.data.decode())
                    )
                    for item in items
                )


@router.get(
    "/{job_id}/logs",
    response_class=PlainTextResponse,
    responses={200: LOG_TEXT, **responses(400, 429)},
)
async def get_job_logs(
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ProjectActorDep,
    follow: bool = False,
    attempt: Annotated[int | None, Query(ge=1, le=1000)] = None,
    format: Annotated[
        Literal["text", "json"],
        Query(
            description="`text`: the output as it was written; `json`: a line each, marked "
            "with its stream."
        ),
    ] = "text",
) -> Response:
    """The job's output as text (all attempts, or one); ``follow=true`` streams until it ends.
    With ``format=json``, a JSON object a line of output, naming its stream (stdout, stderr).

    A follow is a live stream: it counts against the token's ``ORCH_MAX_STREAMS_PER_TOKEN``
    (429 above it) and closes when the token is revoked or no longer sees the project.
    """
    await run_in_threadpool(_job, services, project, job_id)
    as_json = format == "json"
    media_type = NDJSON if as_json else "text/plain; charset=utf-8"
    if follow:
        lease = services.streams.open(actor, project)
        batches = services.streams.logs(project, job_id, attempt, lease)
        return LiveStream(
            _log_lines(batches) if as_json else _log_text(batches),
            partial(services.streams.close, lease),
            media_type=media_type,
        )

    return StreamingResponse(
        _stored_logs(services, job_id, attempt, as_json), media_type=media_type
    )


async def _stored_logs(
    services: Services, job_id: str, attempt: int | None, as_json: bool
) -> AsyncIterator[str | bytes]:
    """Every stored log batch, read a page at a time so a large log never sits in memory."""

    def page(after: int) -> list[JobLog]:
        with services.db.read() as session:
            return job_queries.logs(session, job_id, after, attempt)

    after = 0
    while rows := await run_in_threadpool(page, after):
        for row in rows:
            assert row.id is not None
            if as_json:
                yield _json_lines(LogLine.lines(row.id, row.attempt, row.stream, row.text))
            else:
                yield row.text
        assert rows[-1].id is not None
        after = rows[-1].id


async def _event_stream(batches: AsyncGenerator[list[Item]], lease: Lease) -> AsyncGenerator[bytes]:
    async with aclosing(batches):
        async for items in batches:
            yield b"".join(item.data for item in items) if items else KEEPALIVE
    if lease.ended:
        yield TOKEN_ENDED


# StreamingResponse has no media type of its own, so FastAPI adds no schema to EVENT_STREAM.
@router.get(
    "/{job_id}/stream",
    response_class=StreamingResponse,
    responses={200: EVENT_STREAM, **responses(400, 429)},
)
async def stream_job(
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ProjectActorDep,
    last_event_id: Annotated[int | None, Header(ge=0, le=2**62)] = None,
) -> StreamingResponse:
    """Server-sent events: every event of the job as it happens, closing at a terminal state.

    Each message's ``event`` is the event type and its ``data`` the event with the job's status.
    Reconnect with ``Last-Event-ID`` to resume after the last event seen. A live stream: it
    counts against the token's ``ORCH_MAX_STREAMS_PER_TOKEN`` (429 above it); when the token is
    revoked or no longer sees the project, a comment says so and the stream closes.
    """
    await run_in_threadpool(_job, services, project, job_id)
    lease = services.streams.open(actor, project)
    return LiveStream(
        _event_stream(services.streams.events(project, job_id, last_event_id or 0, lease), lease),
        partial(services.streams.close, lease),
        media_type="text/event-stream",
    )
