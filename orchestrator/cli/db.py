"""``orchestrator db``: apply and show the database schema's migrations (no server needed).

SQLAlchemy and the storage layer are imported by the commands, not for ``--help``.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import TYPE_CHECKING

import typer

from orchestrator.cli.db_backup import backup
from orchestrator.cli.output import AsJson, fail, print_json, setting_errors
from orchestrator.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.storage.db import Database

app = typer.Typer(help="Migrate the database schema; back it up.", no_args_is_help=True)


def open_database() -> tuple[Settings, Database]:
    """The settings and their database, for a one-shot command; a bad setting or URL ends
    the command with one line."""
    # A one-shot command says itself why the database cannot be used (``unreachable``); the
    # outage line a long-running process logs would say it twice.
    logging.getLogger("orchestrator.storage.db").setLevel(logging.ERROR)
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from orchestrator.config import Settings
    from orchestrator.storage.db import Database

    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid setting: {setting_errors(exc)}", code=2)
    try:
        return settings, Database(settings.resolved_database_url())
    except (ArgumentError, NoSuchModuleError, ImportError, ValueError) as exc:
        # Never echo the URL: it may hold a password. ImportError: its driver is not installed.
        fail(f"ORCH_DATABASE_URL is not a usable database URL ({type(exc).__name__})", code=2)


def unreachable(exc: DatabaseUnavailable) -> str:
    """Why a one-shot command could not use the database, in one line."""
    # The driver's first line names the cause (refused, no such database, bad password).
    return f"cannot reach the database: {exc.cause}"


@app.command()
def upgrade(as_json: AsJson = False) -> None:
    """Migrate the schema to the newest revision (servers also do this when they start)."""
    _, database = open_database()
    try:
        result = database.upgrade_schema()
    except DatabaseUnavailable as exc:
        fail(unreachable(exc), code=2)
    finally:
        database.dispose()
    if as_json:
        print_json(dataclasses.asdict(result))
    elif result.applied:
        typer.echo(f"upgraded the schema from {result.before or 'empty'} to {result.after}")
    else:
        typer.echo(f"the schema is at {result.after}, the newest revision")


@app.command()
def current(as_json: AsJson = False) -> None:
    """Print the schema's revision ("none": empty, or created before migrations)."""
    _, database = open_database()
    try:
        revision = database.schema_revision()
    except DatabaseUnavailable as exc:
        fail(unreachable(exc), code=2)
    finally:
        database.dispose()
    if as_json:
        print_json({"revision": revision})
    else:
        typer.echo(revision or "none")


# Its own module: the copy and its key-file caveat are one concern, apart from migrations.
app.command()(backup)
