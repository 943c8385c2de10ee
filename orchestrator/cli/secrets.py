"""``orchestrator secrets``: rotate the key that encrypts secret values at rest.

Works on the database and the data dir directly (``ORCH_DATABASE_URL``, ``ORCH_DATA_DIR``,
``ORCH_SECRET_KEY``), not over HTTP, beside running servers. Prints counts, never values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from pydantic import ValidationError

from orchestrator.cli.output import fail, setting_errors
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.storage import key_rotation
from orchestrator.storage.db import Database
from orchestrator.storage.key_rotation import Tally
from orchestrator.storage.secret_box import KEY_FILE, KEY_SETTING

app = typer.Typer(help="Rotate the key that encrypts secret values.", no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Rotate the key that encrypts secret values at rest."""


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        fail(f"invalid setting in the environment: {setting_errors(exc)}")


def _database(settings: Settings) -> Database:
    url = settings.resolved_database_url()
    path = sa.engine.make_url(url).database
    # Opening a SQLite path creates the file: a mistyped data dir would get an empty database.
    if url.startswith("sqlite") and path and not Path(path).exists():
        fail(f"no database at {path}: is ORCH_DATA_DIR (or ORCH_DATABASE_URL) the server's?")
    db = Database(url)
    key_rotation.check_schema(db)
    return db


def _report(tallies: list[Tally], primary: str) -> None:
    for tally in tallies:
        typer.echo(
            f"{tally.column}: {tally.retired} re-encrypted, "
            f"{tally.current} already under the {primary}"
        )
    unreadable = sum(t.unreadable for t in tallies)
    if unreadable:
        fail(
            f"{unreadable} row(s) decrypt with no key of the ring and were left as they are: "
            f"a process may be using another key (check {KEY_SETTING} and ORCH_DATA_DIR)"
        )


def _with_key_file(db: Database, path: Path, prune: bool) -> None:
    if not path.exists():
        fail(f"no key file at {path} and {KEY_SETTING} is not set: is ORCH_DATA_DIR the server's?")
    typer.echo(f"key file: {path}")
    if prune:
        dropped = key_rotation.prune_key_file(db, path)
        typer.echo(
            f"every stored ciphertext decrypts with the primary key; dropped {dropped} "
            "retired key(s)"
        )
        return
    retired, tallies = key_rotation.rotate_key_file(db, path)
    typer.echo(f"wrote a new primary key; kept {retired} retired key(s) after it for decryption")
    _report(tallies, "new key")
    typer.echo(
        "once no process uses a retired key any more, drop them with: "
        "orchestrator secrets rotate-key --prune"
    )


def _with_setting(db: Database, configured: str, prune: bool) -> None:
    if prune:
        retired = key_rotation.check_configured_prune(db, configured)
        typer.echo(
            f"every stored ciphertext decrypts with the first key of {KEY_SETTING}; you may "
            f"remove the {retired} other key(s) from it on every process"
        )
        return
    typer.echo(
        f"{KEY_SETTING} is set: no key generated; re-encrypting everything under its first key "
        "(to rotate: put a new key first in it, the old ones after it, on every process, then "
        "run this)"
    )
    _report(key_rotation.rotate_configured_key(db, configured), "first key")


@app.command("rotate-key")
def rotate_key(
    prune: Annotated[
        bool,
        typer.Option(
            "--prune",
            help="Drop the retired keys, once every stored ciphertext decrypts with the "
            "primary key (refused otherwise).",
        ),
    ] = False,
) -> None:
    """Re-encrypt every secret value under a new key (or the first key of ORCH_SECRET_KEY)."""
    settings = _settings()
    try:
        db = _database(settings)
        try:
            if settings.secret_key and settings.secret_key.get_secret_value():
                _with_setting(db, settings.secret_key.get_secret_value(), prune)
            else:
                _with_key_file(db, settings.data_dir / KEY_FILE, prune)
        finally:
            db.dispose()
    except OrchestratorError as exc:
        fail(exc.message)
