"""``orchestrator db backup``: a consistent copy of a SQLite database, taken while servers run;
for PostgreSQL, the ``pg_dump`` command to use instead. The key file is never in the copy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from orchestrator.cli.output import AsJson, fail, print_json, setting_errors
from orchestrator.errors import OrchestratorError


def backup(
    path: Annotated[Path, typer.Argument(help="The new file to write (never overwritten).")],
    as_json: AsJson = False,
) -> None:
    """Copy the SQLite database to PATH (mode 0600) while servers run; not the key file."""
    from pydantic import ValidationError
    from sqlalchemy.exc import ArgumentError

    from orchestrator.config import Settings
    from orchestrator.storage.backup import backup_sqlite, pg_dump_command
    from orchestrator.storage.private_files import sqlite_file
    from orchestrator.storage.secret_box import KEY_FILE, KEY_SETTING

    try:
        settings = Settings()
    except ValidationError as exc:
        fail(f"invalid setting: {setting_errors(exc)}", code=2)
    url = settings.resolved_database_url()
    try:
        is_sqlite = sqlite_file(url) is not None
    except ArgumentError:
        fail("ORCH_DATABASE_URL is not a usable database URL", code=2)
    if not is_sqlite:
        # Never echo the URL: it may hold a password. pg_dump's own flags carry the rest.
        fail(
            "the database is not a SQLite file; back up PostgreSQL with pg_dump (it reads the "
            f"password from PGPASSWORD or ~/.pgpass):\n  {pg_dump_command(url, str(path))}",
            code=2,
        )
    try:
        done = backup_sqlite(url, path)
    except OrchestratorError as exc:
        fail(str(exc))
    key = str(settings.data_dir / KEY_FILE) if settings.secret_key is None else KEY_SETTING
    if as_json:
        print_json(
            {
                "source": str(done.source),
                "target": str(done.target),
                "size": done.size,
                "key_source": key,
            }
        )
        return
    typer.echo(f"backed up {done.source} to {done.target} ({done.size} bytes, mode 0600)")
    if settings.secret_key is not None:
        keys = f"the keys of {KEY_SETTING}"
    else:
        keys = f"the key file {settings.data_dir / KEY_FILE}"
    typer.echo(
        f"the backup holds the secret values encrypted, not the key: they can be read only "
        f"with {keys}. Keep a copy of it separately from the backup; restore both together."
    )
