"""``orchestrator jobs``: list (a page, or every page), inspect and cancel jobs; read their
logs and events."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli import depends_on
from orchestrator.cli.output import (
    ATTEMPT_COLUMNS,
    EVENT_COLUMNS,
    JOB_COLUMNS,
    AsJson,
    Project,
    connect,
    fields,
    print_json,
    table,
)
from orchestrator.rules.states import JobStatus

app = typer.Typer(help="List, inspect and cancel jobs; read logs and events.", no_args_is_help=True)

# Jobs per request when --all reads every page: the server's largest page.
ALL_PAGE_SIZE = 500


JobId = Annotated[str, typer.Argument(help="The job's id.")]


@app.command("ls")
def jobs_ls(
    queue: Annotated[str | None, typer.Option(help="Only this queue's jobs.")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    definition: Annotated[
        str | None, typer.Option(help="Only jobs of this definition: NAME or NAME:VERSION.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Only jobs of this name.")] = None,
    created_after: Annotated[
        str | None,
        typer.Option(metavar="TIME", help="Only jobs created at or after this RFC 3339 time."),
    ] = None,
    created_before: Annotated[
        str | None, typer.Option(metavar="TIME", help="Only jobs created before this time.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, max=500, help="Jobs per page [50; with --all, 500 per request]."),
    ] = None,
    cursor: Annotated[
        str | None, typer.Option(help="Start after this page: the next_cursor a page gave.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Every matching job: read page after page.")
    ] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The project's jobs, newest first: one page (the next one with --cursor), or --all.

    --json prints {"items": [...], "next_cursor": ...}; with --all, every job and no cursor.
    """
    params: dict[str, Any] = {"limit": limit or (ALL_PAGE_SIZE if all_ else 50)}
    if queue is not None:
        params["queue"] = queue
    if status is not None:
        params["status"] = status.value
    # The server checks the values and names the one it refuses.
    filters = {
        "definition": definition,
        "name": name,
        "created_after": created_after,
        "created_before": created_before,
    }
    params.update({key: value for key, value in filters.items() if value is not None})
    if cursor is not None:
        params["cursor"] = cursor
    items: list[dict[str, Any]] = []
    with connect(project) as api:
        while True:
            page = api.call("GET", "jobs", params=params)
            items += page["items"]
            if not all_ or not page.get("next_cursor"):
                break
            params["cursor"] = page["next_cursor"]
    next_cursor = None if all_ else page.get("next_cursor")
    if as_json:
        print_json({"items": items, "next_cursor": next_cursor})
        return
    table(items, JOB_COLUMNS)
    if next_cursor:
        typer.echo(f"(more jobs: --cursor {next_cursor}, or --all)", err=True)


@app.command("get")
def jobs_get(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """One job: status, reason, command, input, output, exit code, error, dependencies, and
    its attempts with how each ended (--json: the job alone; see ``jobs attempts``)."""
    with connect(project) as api:
        job = api.call("GET", "jobs", job_id)
        if not as_json:
            tried = api.call("GET", "jobs", job_id, "attempts")["items"]
    if as_json:
        print_json(job)
    else:
        fields({**depends_on.shown(job), "attempts": attempts_line(tried)})


def attempts_line(tried: list[dict[str, Any]]) -> str | None:
    """``#1 failed (exit_code, exit 3); #2 succeeded``: each attempt's outcome and reason."""
    if not tried:
        return None
    shown = []
    for attempt in tried:
        why = [attempt["reason"]] if attempt["reason"] else []
        if attempt["exit_code"] is not None and attempt["outcome"] != "succeeded":
            why.append(f"exit {attempt['exit_code']}")
        outcome = attempt["outcome"] or "running"
        shown.append(f"#{attempt['attempt']} {outcome}" + (f" ({', '.join(why)})" if why else ""))
    return "; ".join(shown)


@app.command("attempts")
def jobs_attempts(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """The job's attempts, first to last: outcome, exit code, reason, runner, times."""
    with connect(project) as api:
        page = api.call("GET", "jobs", job_id, "attempts")
    if as_json:
        print_json(page)
    else:
        table(page["items"], ATTEMPT_COLUMNS)


@app.command("cancel")
def jobs_cancel(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """Cancel a job: at once when waiting; a running one is stopped by its runner."""
    with connect(project) as api:
        job = api.call("POST", "jobs", job_id, "cancel")
    if as_json:
        print_json(job)
    elif job["status"] == "cancelled":
        typer.echo(f"{job['id']} cancelled")
    else:
        typer.echo(f"{job['id']} cancel requested (status: {job['status']})")


@app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The job's output text (every attempt); --json: {"id", "logs"} once the text is read."""
    with connect(project) as api:
        if follow and not as_json:
            for chunk in api.stream_text("jobs", job_id, "logs", params={"follow": "true"}):
                typer.echo(chunk, nl=False)
            return
        params = {"follow": "true"} if follow else None
        text = "".join(api.stream_text("jobs", job_id, "logs", params=params))
    if as_json:
        print_json({"id": job_id, "logs": text})
    else:
        typer.echo(text, nl=False)


@app.command("events")
def jobs_events(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """The job's events, oldest first."""
    with connect(project) as api:
        page = api.call("GET", "jobs", job_id, "events")
    if as_json:
        print_json(page)
    else:
        table(page["items"], EVENT_COLUMNS)
