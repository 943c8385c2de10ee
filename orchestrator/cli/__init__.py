"""The ``orchestrator`` command: ``serve`` runs the server; the rest talk to it over HTTP.

Startup matters (``--help``, completion, every client command): the modules imported here
import only typer and the standard library's light parts; each command imports what it needs
(pydantic settings, httpx, SQLAlchemy, the API) when it runs. ``bench/cli_startup.py``
measures it.
"""

from __future__ import annotations

from typing import Annotated

import typer

from orchestrator import __version__
from orchestrator.cli import (
    db,
    definitions,
    gc,
    jobs,
    projects,
    queues,
    runners,
    schedules,
    secrets,
    tokens,
)
from orchestrator.cli.output import configure_logging, fail, setting_errors
from orchestrator.cli.runner import runner as run_runner
from orchestrator.cli.submit import submit
from orchestrator.cli.usage import PROG, Commands

# A traceback's local variables could hold a token or a secret value: never print them.
# Plain help (no rich markup): rich costs startup time, and its framed errors are not one line.
app = typer.Typer(
    name=PROG,
    cls=Commands,
    help="Run container jobs on Docker.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
)


def _show_version(value: bool) -> None:
    if value:
        typer.echo(f"{PROG} {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_show_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Run container jobs on Docker: versioned definitions, queues, logs and output."""


@app.command()
def serve(
    host: str = typer.Option(None, help="Address to listen on [ORCH_HOST, 127.0.0.1]."),
    port: int = typer.Option(None, help="Port to listen on [ORCH_PORT, 8000]."),
    runner: bool = typer.Option(True, help="Run jobs in this process (--no-runner: API only)."),
) -> None:
    """Run the API and a runner on the local Docker engine in one process."""
    from pydantic import ValidationError

    from orchestrator.api import create_app, server
    from orchestrator.config import Settings
    from orchestrator.errors import OrchestratorError
    from orchestrator.storage.secret_box import parse_setting

    overrides: dict[str, object] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if not runner:
        overrides["runner_enabled"] = False
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
        # A bad policy or key should stop the start with one line, not a traceback.
        settings.container_policy()
        if settings.secret_key is not None:
            parse_setting(settings.secret_key.get_secret_value())
    except ValidationError as exc:
        fail(f"invalid setting: {setting_errors(exc)}", code=2)
    except OrchestratorError as exc:
        fail(exc.message, code=2)
    configure_logging()
    typer.echo(f"data dir: {settings.data_dir}")
    server.run(create_app(settings), settings)


app.add_typer(definitions.app, name="definitions")
app.add_typer(jobs.app, name="jobs")
app.add_typer(queues.app, name="queues")
app.add_typer(projects.app, name="projects")
app.add_typer(tokens.app, name="tokens")
app.add_typer(secrets.app, name="secrets")
app.add_typer(db.app, name="db")
app.add_typer(runners.app, name="runners")
app.add_typer(schedules.app, name="schedules")
app.command()(submit)
app.command(name="runner")(run_runner)
app.command(name="gc")(gc.gc)


def main() -> None:
    """Entry point of the console script."""
    # The program's name, not "python -m orchestrator": shell completion is keyed by it.
    app(prog_name=PROG)
