"""``orchestrator db``: apply and show the database schema's migrations (no server needed).

SQLAlchemy and the storage layer are imported by the commands, not for ``--help``.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from orchestrator.cli.db_backup import backup
from orchestrator.cli.output import AsJson, fail, print_json, setting_errors
from orchestrator.errors import DatabaseUnavailable

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.storage.db import Database

app = typer.Typer(help="Migrate the database schema; back it up.", no_args_is_help=True)


class _ThreadFilter(logging.Filter):
    """Drops the records one thread makes."""

    def __init__(self) -> None:
        super().__init__()
        self.thread = threading.get_ident()

    def filter(self, record: logging.LogRecord) -> bool:
        return record.thread != self.thread


@contextmanager
def opened_database() -> Iterator[tuple[Settings, Database]]:
    """The settings and their database, for a one-shot command, disposed of at the end. A bad
    setting or URL, or a database that cannot be reached, ends the command with one line."""
    # The command says itself why the database cannot be used (``unreachable``); the outage
    # line a long-running process logs would say it twice. Silenced for this thread and this
    # command only: the CLI also runs inside other processes (tests, embedders), where a
    # logger level set here would silence their outages for good.
    outage_lines = logging.getLogger("orchestrator.storage.db")
    silenced = _ThreadFilter()
    outage_lines.addFilter(silenced)
    try:
        settings, database = _open_database()
        try:
            yield settings, database
        except DatabaseUnavailable as exc:
            fail(unreachable(exc), code=2)
        finally:
            database.dispose()
    finally:
        outage_lines.removeFilter(silenced)


def _open_database() -> tuple[Settings, Database]:
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
    with opened_database() as (_, database):
        result = database.upgrade_schema()
    if as_json:
        print_json(dataclasses.asdict(result))
    elif result.applied:
        typer.echo(f"upgraded the schema from {result.before or 'empty'} to {result.after}")
    else:
        typer.echo(f"the schema is at {result.after}, the newest revision")


@app.command()
def current(as_json: AsJson = False) -> None:
    """Print the schema's revision ("none": empty, or created before migrations)."""
    with opened_database() as (_, database):
        revision = database.schema_revision()
    if as_json:
        print_json({"revision": revision})
    else:
        typer.echo(revision or "none")


# Its own module: the copy and its key-file caveat are one concern, apart from migrations.
app.command()(backup)
