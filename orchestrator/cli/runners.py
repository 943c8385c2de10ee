"""``orchestrator runners``: list the runners sharing the database, and drain one."""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator.cli.output import AsJson, connect, print_json, table

app = typer.Typer(help="List runners and drain them.", no_args_is_help=True)

RUNNER_COLUMNS = (
    ("name", "NAME"),
    ("state", "STATE"),
    ("hostname", "HOST"),
    ("docker_host", "DOCKER"),
    ("docker", "ENGINE"),
    ("capacity", "CAPACITY"),
    ("running", "RUNNING"),
    ("heartbeat_time", "HEARTBEAT"),
)


@app.command("ls")
def runners_ls(as_json: AsJson = False) -> None:
    """Every runner: where it runs, its engine, capacity, running jobs, heartbeat and state."""
    with connect(None) as api:
        page = api.call("GET", "runners")
    if as_json:
        print_json(page)
    else:
        table(page["items"], RUNNER_COLUMNS)


@app.command("drain")
def runners_drain(
    name: Annotated[str, typer.Argument(help="The runner's name.")], as_json: AsJson = False
) -> None:
    """Make a runner stop claiming, finish its running jobs and exit (admin token)."""
    with connect(None) as api:
        runner = api.call("POST", "runners", name, "drain")
    if as_json:
        print_json(runner)
    else:
        typer.echo(f"runner {runner['name']} is {runner['state']} ({runner['running']} running)")
