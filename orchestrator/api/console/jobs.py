"""The console's jobs: the list (filters, cursor pages, counts, polled live) and a job's page
(status, attempts, timeline, spec, documents, its log's tail followed live, cancel, resubmit).

Every read and write goes through the services the API's routes call, with the session's actor
checked as the API checks a bearer token's (``Actor.check``: 404 across projects, 403 for a
read-only token's write).
"""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from orchestrator.api.console import freshness
from orchestrator.api.console.pages import render, see_other
from orchestrator.api.console.session import ConsoleActorDep, FormDep
from orchestrator.api.deps import ServicesDep
from orchestrator.api.live import LiveStream
from orchestrator.errors import InvalidRequest
from orchestrator.process import Services
from orchestrator.rules.dependencies import releases
from orchestrator.rules.masking import MASK, public_url
from orchestrator.rules.roles import Role
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.jobs import LOG_STREAMS, LogLine
from orchestrator.services import (
    dependencies,
    job_queries,
    jobs,
    projects,
    queues,
    resubmit,
    webhooks,
)
from orchestrator.services.audit import Actor
from orchestrator.storage.models import Job, JobLog
from orchestrator.streams.feed import Item

router = APIRouter(prefix="/ui", include_in_schema=False)

# Jobs a list page shows; log chunks a job page shows at first and per "load earlier".
PAGE_JOBS = 50
# An array parent's children a job page lists at a time; the dependents it names.
PAGE_CHILDREN = 50
PAGE_DEPENDENTS = 50
LOG_CHUNKS = 200
# Event types that end an attempt, whose detail carries its exit code and reason.
Filter = Annotated[str, Query(max_length=300)]


def visible_projects(session: Session, actor: Actor) -> list[str]:
    """The projects the actor sees: every one for an admin token, else its own."""
    if actor.role is Role.ADMIN:
        return [project.name for project in projects.list_all(session)]
    return [actor.project] if actor.project else []


def chosen_project(session: Session, actor: Actor, project: str) -> tuple[str, list[str]]:
    """The project a page shows (``project``, or the first the actor sees, ``default`` first)
    and the list to choose from; 404 for a project the actor cannot see."""
    seen = visible_projects(session, actor)
    if not project:
        project = "default" if "default" in seen else (seen[0] if seen else "default")
    actor.check(project, write=False)
    projects.get(session, project)
    return project, seen


def _status(value: str) -> JobStatus | None:
    if not value:
        return None
    try:
        return JobStatus(value)
    except ValueError:
        raise InvalidRequest(
            f"status: '{value}' is not a job status ({', '.join(JobStatus)})", field="status"
        ) from None


def _time(name: str, value: str) -> datetime | None:
    """A time from a ``datetime-local`` field (or RFC 3339), taken as UTC when it has no zone."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(
            f"{name}: '{value}' is not a time (YYYY-MM-DDTHH:MM, UTC)", field=name
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _list(services: Services, actor: Actor, filters: dict[str, str], cursor: str) -> dict[str, Any]:
    where = job_queries.JobFilter(
        queue=filters["queue"] or None,
        status=_status(filters["status"]),
        definition=filters["definition"] or None,
        name=filters["name"] or None,
        created_after=_time("created_after", filters["created_after"]),
        created_before=_time("created_before", filters["created_before"]),
    )
    with services.db.read() as session:
        project, seen = chosen_project(session, actor, filters["project"])
        items, next_cursor = job_queries.list_jobs(
            session,
            project,
            where=where,
            limit=PAGE_JOBS,
            cursor=cursor or None,
            max_bytes=services.settings.list_page_max_bytes,
            batch=job_queries.read_batch(services.settings, (), PAGE_JOBS),
        )
        # The API's queue lengths (the claim index), summed: waiting and running now.
        lengths = queues.counts(session, project).values()
        queue_names = [queue.name for queue in queues.list_all(session, project)]
    query = {**filters, "project": project}
    return {
        "project": project,
        "projects": seen,
        "queues": queue_names,
        "statuses": list(JobStatus),
        "filters": query,
        "jobs": [json.loads(item) for item in items],
        "waiting": sum(waiting for waiting, _ in lengths),
        "running": sum(running for _, running in lengths),
        "cursor": cursor,
        "next_url": f"/ui/jobs?{urlencode({**query, 'cursor': next_cursor})}"
        if next_cursor
        else None,
        "first_url": f"/ui/jobs?{urlencode(query)}",
        "rows_url": f"/ui/jobs/rows?{urlencode(query)}",
    }


def job_filters(
    project: Filter = "",
    queue: Filter = "",
    status: Filter = "",
    definition: Filter = "",
    name: Filter = "",
    created_after: Filter = "",
    created_before: Filter = "",
) -> dict[str, str]:
    """The jobs page's filters, as its form sends them (empty: not filtered)."""
    return {
        "project": project,
        "queue": queue,
        "status": status,
        "definition": definition,
        "name": name,
        "created_after": created_after,
        "created_before": created_before,
    }


JobFiltersDep = Annotated[dict[str, str], Depends(job_filters)]


@router.get("/jobs", response_class=HTMLResponse)
def jobs_page(
    request: Request,
    services: ServicesDep,
    actor: ConsoleActorDep,
    filters: JobFiltersDep,
    cursor: Filter = "",
) -> Response:
    """The jobs of a project, newest first, filtered, a page at a time."""
    return render(request, "jobs.html", _list(services, actor, filters, cursor), actor=actor)


@router.get("/jobs/rows", response_class=HTMLResponse)
def jobs_rows(
    request: Request, services: ServicesDep, actor: ConsoleActorDep, filters: JobFiltersDep
) -> Response:
    """The first page's counts and rows alone: what the jobs page polls to stay live (304 when
    no job moved since the browser's copy)."""
    tag = freshness.etag(request, services)
    if (same := freshness.unchanged(request, tag)) is not None:
        return same
    page = render(request, "_jobs_live.html", _list(services, actor, filters, ""), actor=actor)
    return freshness.tagged(page, tag)


def children_view(children_status: Filter = "", children_cursor: Filter = "") -> dict[str, str]:
    """Which of an array parent's children its page lists: a status (empty: all) and a page."""
    return {"children_status": children_status, "children_cursor": children_cursor}


ChildrenViewDep = Annotated[dict[str, str], Depends(children_view)]


def _family(
    services: Services, session: Session, project: str, job: Job, view: dict[str, str]
) -> dict[str, Any]:
    """What a job's page shows of its array and its dependencies: a parent's counts by status
    and a page of its children (``view``); the jobs it depends on (settled or not, met or not)
    and the first of the jobs that depend on it."""
    base = f"/ui/projects/{project}/jobs/{job.id}"
    counts = job_queries.children_counts(session, job)
    children: list[dict[str, Any]] = []
    next_children = None
    if counts is not None:
        items, next_cursor = job_queries.list_jobs(
            session,
            project,
            where=job_queries.JobFilter(status=_status(view["children_status"]), parent_id=job.id),
            limit=PAGE_CHILDREN,
            cursor=view["children_cursor"] or None,
            max_bytes=services.settings.list_page_max_bytes,
            batch=job_queries.read_batch(services.settings, (), PAGE_CHILDREN),
        )
        children = [json.loads(item) for item in items]
        if next_cursor:
            query = {"children_status": view["children_status"], "children_cursor": next_cursor}
            next_children = f"{base}?{urlencode(query)}#children-h"
    links, dependents_count = dependencies.shown(session, job.id)
    depends_on = [
        {
            "link": link,
            # A deleted dependency had ended: retention deletes only finished jobs.
            "settled": link.status is None or link.status.terminal,
            "met": link.status is not None and releases(link.on, link.status),
        }
        for link in links
    ]
    return {
        "children": counts,
        "child_rows": children,
        "children_status": view["children_status"],
        "children_first_url": f"{base}?{urlencode({'children_status': view['children_status']})}",
        "children_next_url": next_children,
        "live_query": urlencode({k: v for k, v in view.items() if v}),
        "depends_on": depends_on,
        "dependents": dependencies.dependents(session, job.id, PAGE_DEPENDENTS),
        "dependents_count": dependents_count,
    }


def _job_context(
    services: Services,
    actor: Actor,
    project: str,
    job_id: str,
    view: dict[str, str] | None = None,
) -> dict[str, Any]:
    actor.check(project, write=False)
    with services.db.read() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        events = job_queries.events(session, job.id)
        attempts = job_queries.attempts(session, job.id)
        deliveries = webhooks.deliveries(session, job.id)
        family = _family(services, session, project, job, view or children_view())
    return {
        "project": project,
        "job": job,
        "events": events,
        "attempts": attempts,
        "secret_env": dict.fromkeys(job.secret_env_keys, MASK),
        # The URLs as the API shows them: credentials in them replaced by ***.
        "deliveries": [(row, public_url(row.url)) for row in deliveries],
        "base": f"/ui/projects/{project}/jobs/{job.id}",
        "statuses": list(JobStatus),
        **family,
    }


@router.get("/projects/{project}/jobs/{job_id}", response_class=HTMLResponse)
def job_page(
    request: Request,
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    view: ChildrenViewDep,
) -> Response:
    """One job whole, and the tail of its log."""
    context = _job_context(services, actor, project, job_id, view)
    with services.db.read() as session:
        chunks = job_queries.log_tail(session, context["job"].id, limit=LOG_CHUNKS)
    context["log"] = _segments(chunks)
    context["log_first"] = chunks[0].id if chunks else 0
    context["log_last"] = chunks[-1].id if chunks else 0
    context["log_more"] = len(chunks) == LOG_CHUNKS
    return render(request, "job.html", context, actor=actor)


@router.get("/projects/{project}/jobs/{job_id}/live", response_class=HTMLResponse)
def job_live(
    request: Request,
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    view: ChildrenViewDep,
) -> Response:
    """The parts of a job page that change while it runs (polled until it ends; 304 when no
    job moved since the browser's copy)."""
    actor.check(project, write=False)
    tag = freshness.etag(request, services)
    if (same := freshness.unchanged(request, tag)) is not None:
        return same
    context = _job_context(services, actor, project, job_id, view)
    return freshness.tagged(render(request, "_job_live.html", context, actor=actor), tag)


@router.get("/projects/{project}/jobs/{job_id}/log")
def job_log_earlier(
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    before: Annotated[int, Query(ge=1, le=2**62)],
) -> Response:
    """The log lines of the chunks before the chunk ``before`` (at most ``LOG_CHUNKS``), each
    with its stream: "load earlier"."""
    actor.check(project, write=False)
    with services.db.read() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        chunks = job_queries.log_tail(session, job.id, before=before, limit=LOG_CHUNKS)
    return JSONResponse(
        {
            "lines": [line.model_dump() for chunk in chunks for line in _lines(chunk)],
            "first": chunks[0].id if chunks else 0,
            "more": len(chunks) == LOG_CHUNKS,
        },
        headers={"Cache-Control": "no-store"},
    )


def _lines(chunk: JobLog) -> list[LogLine]:
    assert chunk.id is not None
    return LogLine.lines(chunk.id, chunk.attempt, chunk.stream, chunk.text)


def _segments(chunks: list[JobLog]) -> list[dict[str, Any]]:
    """The log as the page shows it: stdout's text (and text of no known stream) as it is, each
    stderr line marked, with a "stderr" label where a line starts (as ``console.js`` does)."""
    segments: list[dict[str, Any]] = []
    line_start = True
    for chunk in chunks:
        if chunk.stream is None or LOG_STREAMS.get(chunk.stream) != "stderr":
            segments.append({"stderr": False, "text": chunk.text})
            line_start = chunk.text.endswith("\n") if chunk.text else line_start
            continue
        for line in _lines(chunk):
            segments.append({"stderr": True, "label": line_start, "text": line.text})
            line_start = line.text.endswith("\n")
    return segments


async def _log_lines(batches: AsyncGenerator[list[Item]]) -> AsyncGenerator[bytes]:
    """Each batch's lines as JSON, one a line, each with its stream (as the API's
    ``format=json``)."""
    async with aclosing(batches):
        async for items in batches:
            if items:
                yield "".join(
                    line.model_dump_json() + "\n"
                    for item in items
                    for line in LogLine.lines(
                        item.id, item.attempt, item.stream, item.data.decode()
                    )
                ).encode()


@router.get("/projects/{project}/jobs/{job_id}/log/follow")
async def job_log_follow(
    project: str,
    job_id: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    after: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> Response:
    """The log after chunk ``after`` as it is written, until the job ends, a JSON line per line
    of output: the API's log follow (the same feed, the same per-token cap on live streams)."""
    actor.check(project, write=False)
    await run_in_threadpool(_job_exists, services, project, job_id)
    lease = services.streams.open(actor, project)
    return LiveStream(
        _log_lines(services.streams.logs(project, job_id, None, lease, after=after)),
        partial(services.streams.close, lease),
        media_type="application/x-ndjson",
    )


def _job_exists(services: Services, project: str, job_id: str) -> None:
    with services.db.read() as session:
        projects.get(session, project)
        job_queries.get(session, project, job_id)


@router.post("/projects/{project}/jobs/{job_id}/cancel")
def cancel_job(
    project: str, job_id: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Cancel the job (as ``POST .../jobs/{id}/cancel``), then show it again."""
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        job = jobs.cancel(session, services.hub, project, job_id, actor)
    return see_other(f"/ui/projects/{project}/jobs/{job.id}")


@router.post("/projects/{project}/jobs/{job_id}/resubmit")
def resubmit_job(
    project: str, job_id: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Submit a new job with this job's spec, then show the new job."""
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        job = resubmit.resubmit(
            session,
            services.box,
            services.hub,
            project,
            job_id,
            policy=services.policy,
            limits=services.limits,
            tes_storage=services.settings.tes_storage(),
            actor=actor,
        )
    return see_other(f"/ui/projects/{project}/jobs/{job.id}")


@router.post("/projects/{project}/jobs/{job_id}/deliveries/{number}/redeliver")
def redeliver_webhook(
    project: str,
    job_id: str,
    number: Annotated[int, Path(ge=1, le=1_000_000)],
    services: ServicesDep,
    actor: ConsoleActorDep,
    form: FormDep,
) -> Response:
    """Send a webhook delivery again (as ``POST .../deliveries/{number}/redeliver``)."""
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        job = job_queries.get(session, project, job_id)
        webhooks.redeliver(session, job, number, services.hub)
    return see_other(f"/ui/projects/{project}/jobs/{job.id}#deliveries-h")
