"""``orchestrator queues``: create, list, change, pause, resume and delete queues."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli.output import QUEUE_COLUMNS, AsJson, Project, connect, print_json, table

app = typer.Typer(
    help="Create, list, change, pause, resume and delete queues.", no_args_is_help=True
)


QueueName = Annotated[str, typer.Argument(help="The queue's name.")]


def _show_queues(queues: list[dict[str, Any]], as_json: bool, raw: Any) -> None:
    if as_json:
        print_json(raw)
    else:
        table(queues, QUEUE_COLUMNS)


@app.command("ls")
def queues_ls(project: Project = "default", as_json: AsJson = False) -> None:
    """The project's queues, highest priority first, with their lengths."""
    with connect(project) as api:
        page = api.call("GET", "queues")
    _show_queues(page["items"], as_json, page)


@app.command("create")
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
    description: Annotated[str | None, typer.Option(help="What the queue is for.")] = None,
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
        "description": description,
        "default_definition": default_definition,
    }
    with connect(project) as api:
        queue = api.call("POST", "queues", json={k: v for k, v in body.items() if v is not None})
    _show_queues([queue], as_json, queue)


@app.command("update")
def queues_update(
    name: QueueName,
    priority: Annotated[int | None, typer.Option(help="Higher is served first.")] = None,
    max_concurrency: Annotated[
        int | None, typer.Option(min=1, help="At most this many jobs running.")
    ] = None,
    no_max_concurrency: Annotated[
        bool, typer.Option("--no-max-concurrency", help="Lift the concurrency limit.")
    ] = False,
    display_name: Annotated[str | None, typer.Option(help="A human name.")] = None,
    description: Annotated[str | None, typer.Option(help="What the queue is for.")] = None,
    default_definition: Annotated[
        str | None,
        typer.Option(help="The definition of jobs submitted with none (waiting ones get it)."),
    ] = None,
    no_default_definition: Annotated[
        bool, typer.Option("--no-default-definition", help="Remove the default definition.")
    ] = False,
    project: Project = "default",
    as_json: AsJson = False,
) -> None:
    """Change the given fields of a queue; the others stay (pause and resume: their commands)."""
    changes: dict[str, Any] = {
        "priority": priority,
        "max_concurrency": max_concurrency,
        "display_name": display_name,
        "description": description,
        "default_definition": default_definition,
    }
    body = {key: value for key, value in changes.items() if value is not None}
    for flag, field, lifted in (
        ("--no-max-concurrency", "max_concurrency", no_max_concurrency),
        ("--no-default-definition", "default_definition", no_default_definition),
    ):
        if lifted and field in body:
            raise typer.BadParameter(
                f"give {flag} or --{field.replace('_', '-')}, not both", param_hint=f"'{flag}'"
            )
        if lifted:
            body[field] = None  # JSON null: lift it
    if not body:
        raise typer.BadParameter("give at least one field to change", param_hint="'NAME'")
    with connect(project) as api:
        queue = api.call("PATCH", "queues", name, json=body)
    _show_queues([queue], as_json, queue)


def _set_paused(name: str, paused: bool, project: str, as_json: bool) -> None:
    with connect(project) as api:
        queue = api.call("PATCH", "queues", name, json={"paused": paused})
    _show_queues([queue], as_json, queue)


@app.command("pause")
def queues_pause(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Pause a queue: its waiting jobs stay queued; running ones go on."""
    _set_paused(name, True, project, as_json)


@app.command("resume")
def queues_resume(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Resume a paused queue."""
    _set_paused(name, False, project, as_json)


@app.command("delete")
def queues_delete(name: QueueName, project: Project = "default", as_json: AsJson = False) -> None:
    """Delete a queue with no waiting or running jobs."""
    with connect(project) as api:
        api.request("DELETE", "queues", name)
    if as_json:
        print_json({"name": name, "deleted": True})
    else:
        typer.echo(f"deleted queue {name}")
