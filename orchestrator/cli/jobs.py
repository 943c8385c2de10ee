"""``orchestrator submit`` and ``orchestrator jobs``: submit, follow, list, inspect, cancel."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from orchestrator.cli.client import Client
from orchestrator.cli.output import (
    EVENT_COLUMNS,
    EXIT_CANCELLED,
    JOB_COLUMNS,
    AsJson,
    Project,
    connect,
    fail,
    fields,
    print_json,
    table,
)
from orchestrator.rules.states import JobStatus
from orchestrator.rules.units import parse_duration

app = typer.Typer(help="List, inspect and cancel jobs; read logs and events.", no_args_is_help=True)


def key_value_pairs(values: list[str] | None, option: str, secret: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a secret's text is never echoed in the error."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            shown = "a value" if secret else repr(item)
            raise typer.BadParameter(f"{shown} is not KEY=VALUE", param_hint=f"'{option}'")
        pairs[key] = value
    return pairs


def input_option(text: str) -> Any:
    """The ``--input`` JSON, given inline or as ``@path``."""
    where = ""
    if text.startswith("@"):
        path = Path(text[1:])
        where = f"{path}: "
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise typer.BadParameter(
                f"{where}cannot read: {reason}", param_hint="'--input'"
            ) from None
        except UnicodeDecodeError:
            raise typer.BadParameter(f"{where}not UTF-8 text", param_hint="'--input'") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        reason = f"{exc.msg} at line {exc.lineno} column {exc.colno}"
        raise typer.BadParameter(
            f"{where}not valid JSON ({reason})", param_hint="'--input'"
        ) from None


def _duration(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--timeout'") from None


def _exit_code(job: dict[str, Any]) -> int:
    """The exit status of a finished job: its container's, 130 if cancelled, 1 if unknown."""
    if job["status"] == "cancelled":
        return EXIT_CANCELLED
    if job.get("exit_code") is not None:
        return int(job["exit_code"])
    return 0 if job["status"] == "succeeded" else 1


def _follow(api: Client, job_id: str, as_json: bool) -> NoReturn:
    """Stream the job's logs until it ends, then exit with its exit status."""
    try:
        for chunk in api.stream_text("jobs", job_id, "logs", params={"follow": "true"}):
            typer.echo(chunk, nl=False, err=as_json)
    except KeyboardInterrupt:
        fail(f"stopped following; job {job_id} keeps running", EXIT_CANCELLED)
    job = api.call("GET", "jobs", job_id)
    if as_json:
        print_json(job)
    if job.get("error"):
        typer.echo(f"error: {job['error']}", err=True)
    raise typer.Exit(_exit_code(job))


def submit(
    definition: Annotated[str, typer.Argument(help="A definition: name (latest) or name:version.")],
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", metavar="KEY=VALUE", help="A parameter (repeatable)."),
    ] = None,
    queue: Annotated[str | None, typer.Option(help="The queue (default: default).")] = None,
    input_: Annotated[
        str | None,
        typer.Option(
            "--input", metavar="JSON|@FILE", help="The job's input JSON, or a file of it."
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", metavar="KEY=VALUE", help="An env var (repeatable)."),
    ] = None,
    secret: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="A secret env var (repeatable; never shown)."),
    ] = None,
    name: Annotated[str | None, typer.Option(help="A name for the job.")] = None,
    priority: Annotated[int | None, typer.Option(help="Higher runs first in its queue.")] = None,
    timeout: Annotated[
        str | None, typer.Option(metavar="DURATION", help="Kill it after this long, e.g. 30s.")
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Stream its logs until it ends and exit with its exit code (130: cancelled).",
        ),
    ] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Submit a job; print its id and status (with --follow, to stderr; stdout has the logs).

    With --follow --json the logs go to stderr and the finished job's JSON to stdout.
    """
    given: dict[str, Any] = {
        "definition": definition,
        "queue": queue,
        "parameters": key_value_pairs(param, "--param") or None,
        "env": key_value_pairs(env, "--env") or None,
        "secret_env": key_value_pairs(secret, "--secret", secret=True) or None,
        "name": name,
        "priority": priority,
        "timeout": _duration(timeout),
    }
    body = {key: value for key, value in given.items() if value is not None}
    if input_ is not None:
        body["input"] = input_option(input_)
    with connect(project) as api:
        job = api.call("POST", "jobs", json=body)
        if as_json and not follow:
            print_json(job)
        elif not as_json:
            typer.echo(f"{job['id']} {job['status']}", err=follow)
        if follow:
            _follow(api, job["id"], as_json)


# --- jobs ----------------------------------------------------------------------------------

JobId = Annotated[str, typer.Argument(help="The job's id.")]


@app.command("ls")
def jobs_ls(
    queue: Annotated[str | None, typer.Option(help="Only this queue's jobs.")] = None,
    status: Annotated[JobStatus | None, typer.Option(help="Only jobs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many.")] = 50,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The project's jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if queue is not None:
        params["queue"] = queue
    if status is not None:
        params["status"] = status.value
    with connect(project) as api:
        page = api.call("GET", "jobs", params=params)
    if as_json:
        print_json(page)
        return
    table(page["items"], JOB_COLUMNS)
    if page.get("next_cursor"):
        typer.echo("(more jobs than shown)", err=True)


@app.command("get")
def jobs_get(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """One job: status, command, input, output, exit code, error."""
    with connect(project) as api:
        job = api.call("GET", "jobs", job_id)
    if as_json:
        print_json(job)
    else:
        fields(job)


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
