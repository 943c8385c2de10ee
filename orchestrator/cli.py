"""The ``orchestrator`` command: ``serve`` runs the server; the rest talk to it over HTTP."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
import uvicorn
from pydantic import ValidationError

from orchestrator import definitions
from orchestrator.client import Client, ClientError
from orchestrator.config import Settings
from orchestrator.definitions import DefinitionSpec
from orchestrator.errors import DefinitionInvalid
from orchestrator.states import JobStatus
from orchestrator.units import parse_duration

app = typer.Typer(help="Run container jobs on Docker.", no_args_is_help=True)


@app.callback()
def _root() -> None:
    """Run container jobs on Docker: versioned definitions, queues, logs and output."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on [ORCH_HOST, 127.0.0.1]."),
    port: int = typer.Option(None, help="Port to listen on [ORCH_PORT, 8000]."),
    runner: bool = typer.Option(True, help="Run jobs in this process (--no-runner: API only)."),
) -> None:
    """Run the API and a runner on the local Docker engine in one process."""
    from orchestrator.api import create_app

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if not runner:
        overrides["runner_enabled"] = False
    settings = Settings(**overrides)  # type: ignore[arg-type]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    typer.echo(f"data dir: {settings.data_dir}")
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=5,
    )


# --- client commands: shared options, connection and output ----------------------------------

Project = Annotated[str, typer.Option("--project", help="The project to act in.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print the server's JSON, for scripts.")]

definitions_app = typer.Typer(help="Register and list job definitions.", no_args_is_help=True)
jobs_app = typer.Typer(
    help="List, inspect and cancel jobs; read logs and events.", no_args_is_help=True
)
queues_app = typer.Typer(
    help="Create, list, pause, resume and delete queues.", no_args_is_help=True
)
app.add_typer(definitions_app, name="definitions")
app.add_typer(jobs_app, name="jobs")
app.add_typer(queues_app, name="queues")

JOB_COLUMNS = (
    ("id", "ID"),
    ("name", "NAME"),
    ("definition", "DEFINITION"),
    ("queue", "QUEUE"),
    ("status", "STATUS"),
    ("attempt", "ATTEMPT"),
    ("exit_code", "EXIT"),
    ("create_time", "CREATED"),
)
QUEUE_COLUMNS = (
    ("name", "NAME"),
    ("priority", "PRIORITY"),
    ("max_concurrency", "MAX_CONCURRENCY"),
    ("paused", "PAUSED"),
    ("current_queue_length", "WAITING"),
    ("running", "RUNNING"),
)
EVENT_COLUMNS = (
    ("time", "TIME"),
    ("type", "TYPE"),
    ("status", "STATUS"),
    ("attempt", "ATTEMPT"),
    ("detail", "DETAIL"),
)
EXIT_CANCELLED = 130  # what a shell reports for a process ended by Ctrl-C


def _fail(message: str, code: int = 1) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


@contextmanager
def _connect(project: str) -> Iterator[Client]:
    """A client of the server at ``ORCH_URL``; any client error ends the command with exit 1."""
    try:
        url = Settings().url
    except ValidationError as exc:
        fields = ", ".join("ORCH_" + str(e["loc"][0]).upper() for e in exc.errors() if e["loc"])
        _fail(f"invalid setting in the environment: {fields}")
    try:
        with Client(url, project) as client:
            yield client
    except ClientError as exc:
        _fail(exc.message)


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    if key.endswith("time") and isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return value
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def _table(rows: list[dict[str, Any]], columns: tuple[tuple[str, str], ...]) -> None:
    """Plain aligned columns with a header line."""
    lines = [[label for _, label in columns]]
    lines += [[_cell(key, row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(columns))]
    for line in lines:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())


def _fields(item: dict[str, Any]) -> None:
    """``key: value`` lines, values aligned."""
    width = max(len(key) for key in item) + 1
    for key, value in item.items():
        typer.echo(f"{key + ':':<{width}} {_cell(key, value)}")


def _json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2))


# --- definitions ---------------------------------------------------------------------------


def _definition_files(path: Path) -> list[Path]:
    if not path.is_dir():
        return [path]
    files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    if not files:
        _fail(f"{path}: no *.yaml or *.yml files in this directory")
    return files


def _load_specs(paths: list[Path]) -> list[DefinitionSpec]:
    """Every spec in the files, validated; on any error print them all and exit 1."""
    specs: list[DefinitionSpec] = []
    errors: list[str] = []
    for file in (f for p in paths for f in _definition_files(p)):
        try:
            specs += definitions.load_yaml(file.read_text(encoding="utf-8"), source=str(file))
        except DefinitionInvalid as exc:
            errors.append(exc.message)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(f"{file}: cannot read: {exc}")
    for message in errors:
        typer.echo(f"error: {message}", err=True)
    if errors:
        raise typer.Exit(1)
    return specs


@definitions_app.command("apply")
def definitions_apply(
    paths: Annotated[
        list[Path], typer.Argument(exists=True, help="YAML files, or directories of them.")
    ],
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Register definitions from YAML: a changed spec makes a new version, an equal one is kept.

    Every file is validated first; if any has an error, nothing is registered.
    """
    specs = _load_specs(paths)
    results = []
    with _connect(project) as api:
        for spec in specs:
            body = spec.model_dump(mode="json", exclude_unset=True)
            response = api.request("POST", "definitions", json=body)
            created = response.status_code == 201
            definition = api.json_body(response)
            results.append({**definition, "created": created})
            if not as_json:
                state = "new" if created else "unchanged"
                typer.echo(f"{definition['name']}: version {definition['version']} ({state})")
    if as_json:
        _json(results)


@definitions_app.command("ls")
def definitions_ls(project: Project = "default", as_json: AsJson = False) -> None:
    """The latest version of every definition."""
    with _connect(project) as api:
        page = api.call("GET", "definitions")
    if as_json:
        _json(page)
        return
    rows = [
        {
            "name": d["name"],
            "version": d["version"],
            "image": d["spec"].get("image"),
            "description": d["spec"].get("description"),
        }
        for d in page["items"]
    ]
    columns = (("name", "NAME"), ("version", "VERSION"), ("image", "IMAGE"))
    _table(rows, (*columns, ("description", "DESCRIPTION")))


# --- submit --------------------------------------------------------------------------------


def _pairs(values: list[str] | None, option: str, secret: bool = False) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a secret's text is never echoed in the error."""
    pairs: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            shown = "a value" if secret else repr(item)
            raise typer.BadParameter(f"{shown} is not KEY=VALUE", param_hint=f"'{option}'")
        pairs[key] = value
    return pairs


def _input(text: str) -> Any:
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
        _fail(f"stopped following; job {job_id} keeps running", EXIT_CANCELLED)
    job = api.call("GET", "jobs", job_id)
    if as_json:
        _json(job)
    if job.get("error"):
        typer.echo(f"error: {job['error']}", err=True)
    raise typer.Exit(_exit_code(job))


@app.command()
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
        "parameters": _pairs(param, "--param") or None,
        "env": _pairs(env, "--env") or None,
        "secret_env": _pairs(secret, "--secret", secret=True) or None,
        "name": name,
        "priority": priority,
        "timeout": _duration(timeout),
    }
    body = {key: value for key, value in given.items() if value is not None}
    if input_ is not None:
        body["input"] = _input(input_)
    with _connect(project) as api:
        job = api.call("POST", "jobs", json=body)
        if as_json and not follow:
            _json(job)
        elif not as_json:
            typer.echo(f"{job['id']} {job['status']}", err=follow)
        if follow:
            _follow(api, job["id"], as_json)


# --- jobs ----------------------------------------------------------------------------------

JobId = Annotated[str, typer.Argument(help="The job's id.")]


@jobs_app.command("ls")
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
    with _connect(project) as api:
        page = api.call("GET", "jobs", params=params)
    if as_json:
        _json(page)
        return
    _table(page["items"], JOB_COLUMNS)
    if page.get("next_cursor"):
        typer.echo(f"(more jobs than --limit {limit})", err=True)


@jobs_app.command("get")
def jobs_get(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """One job: status, command, input, output, exit code, error."""
    with _connect(project) as api:
        job = api.call("GET", "jobs", job_id)
    if as_json:
        _json(job)
    else:
        _fields(job)


@jobs_app.command("cancel")
def jobs_cancel(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """Cancel a job: at once when waiting; a running one is stopped by its runner."""
    with _connect(project) as api:
        job = api.call("POST", "jobs", job_id, "cancel")
    if as_json:
        _json(job)
    elif job["status"] == "cancelled":
        typer.echo(f"{job['id']} cancelled")
    else:
        typer.echo(f"{job['id']} cancel requested (status: {job['status']})")


@jobs_app.command("logs")
def jobs_logs(
    job_id: JobId,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Stream until it ends.")] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """The job's output text (every attempt); --json: {"id", "logs"} once the text is read."""
    with _connect(project) as api:
        if follow and not as_json:
            for chunk in api.stream_text("jobs", job_id, "logs", params={"follow": "true"}):
                typer.echo(chunk, nl=False)
            return
        params = {"follow": "true"} if follow else None
        text = "".join(api.stream_text("jobs", job_id, "logs", params=params))
    if as_json:
        _json({"id": job_id, "logs": text})
    else:
        typer.echo(text, nl=False)


@jobs_app.command("events")
def jobs_events(job_id: JobId, project: Project = "default", as_json: AsJson = False) -> None:
    """The job's events, oldest first."""
    with _connect(project) as api:
        page = api.call("GET", "jobs", job_id, "events")
    if as_json:
        _json(page)
    else:
        _table(page["items"], EVENT_COLUMNS)


# --- queues --------------------------------------------------------------------------------

QueueName = Annotated[str, typer.Argument(help="The queue's name.")]


def _show_queues(queues: list[dict[str, Any]], as_json: bool, raw: Any) -> None:
    if as_json:
        _json(raw)
    else:
        _table(queues, QUEUE_COLUMNS)


@queues_app.command("ls")
def queues_ls(project: Project = "default", as_json: AsJson = False) -> None:
    """The project's queues, highest priority first, with their lengths."""
    with _connect(project) as api:
        page = api.call("GET", "queues")
    _show_queues(page["items"], as_json, page)


@queues_app.command("create")
def queues_create(
    name: QueueName,
    priority: Annotated[
        int | None, typer.Option(help="Higher is served first (default: 0).")
    ] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="At most this many jobs running (default: no limit).")
    ] = None,
    paused: Annotated[bool, typer.Option("--paused", help="Create it paused.")] = False,
    display_name: Annotated[str | None, typer.Option(help="A human name.")] = None,
    default_definition: Annotated[
        str | None, typer.Option(help="The definition of jobs submitted with none.")
    ] = None,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Create a queue."""
    body: dict[str, Any] = {
        "name": name,
        "priority": priority,
        "max_concurrency": max_concurrency,
        "paused": paused,
        "display_name": display_name,
        "default_definition": default_definition,
    }
    with _connect(project) as api:
        queue = api.call("POST", "queues", json={k: v for k, v in body.items() if v is not None})
    _show_queues([queue], as_json, queue)


def _set_paused(name: str, paused: bool, project: str, as_json: bool) -> None:
    with _connect(project) as api:
        queue = api.call("PATCH", "queues", name, json={"paused": paused})
    _show_queues([queue], as_json, queue)


@queues_app.command("pause")
def queues_pause(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Pause a queue: its waiting jobs stay queued; running ones go on."""
    _set_paused(name, True, project, as_json)


@queues_app.command("resume")
def queues_resume(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Resume a paused queue."""
    _set_paused(name, False, project, as_json)


@queues_app.command("delete")
def queues_delete(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Delete a queue with no waiting or running jobs."""
    with _connect(project) as api:
        api.request("DELETE", "queues", name)
    if as_json:
        _json({"name": name, "deleted": True})
    else:
        typer.echo(f"deleted queue {name}")


def main() -> None:
    """Entry point of the console script."""
    app()
