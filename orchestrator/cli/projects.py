"""``orchestrator projects``: list the projects a token sees; create one (admin token)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from orchestrator.cli.output import AsJson, connect, print_json, table

app = typer.Typer(help="List and create projects.", no_args_is_help=True)

PROJECT_COLUMNS = (
    ("name", "NAME"),
    ("retention", "RETENTION"),
    ("create_time", "CREATED"),
    ("description", "DESCRIPTION"),
)


def _show(projects: list[dict[str, Any]], as_json: bool, raw: Any) -> None:
    if as_json:
        print_json(raw)
        return
    # Retention in seconds; none: the server's setting.
    rows = [
        {**p, "retention": "server" if p["retention"] is None else p["retention"]} for p in projects
    ]
    table(rows, PROJECT_COLUMNS)


@app.command("ls")
def projects_ls(as_json: AsJson = False) -> None:
    """The projects this token can see."""
    with connect(None) as api:
        page = api.call("GET", "projects")
    _show(page["items"], as_json, page)


@app.command("create")
def projects_create(
    name: Annotated[str, typer.Argument(help="The project's name, e.g. my-project.")],
    description: Annotated[str | None, typer.Option(help="What the project is for.")] = None,
    as_json: AsJson = False,
) -> None:
    """Create a project and its default queue (admin token)."""
    body: dict[str, Any] = {"name": name}
    if description is not None:
        body["description"] = description
    with connect(None) as api:
        project = api.call("POST", "projects", json=body)
    _show([project], as_json, project)
