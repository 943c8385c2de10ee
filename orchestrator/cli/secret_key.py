"""The work of ``orchestrator secrets rotate-key``: rotate the key that encrypts secret values at
rest.

Works on the database and the data dir directly (``ORCH_DATABASE_URL``, ``ORCH_DATA_DIR``,
``ORCH_SECRET_KEY``), not over HTTP, beside running servers. Prints counts, never values.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import typer
from pydantic import ValidationError

from orchestrator.cli.output import fail, print_json, setting_errors
from orchestrator.config import Settings
from orchestrator.errors import OrchestratorError
from orchestrator.storage import key_rotation
from orchestrator.storage.db import Database
from orchestrator.storage.key_rotation import Tally
from orchestrator.storage.secret_box import KEY_FILE, KEY_SETTING


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


class _Report:
    """What the rotation says: lines for people (on stderr with ``--json``) and, with
    ``--json``, one document on stdout at the end."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self.document: dict[str, Any] = {}

    def say(self, text: str) -> None:
        typer.echo(text, err=self.as_json)

    def tallies(self, tallies: list[Tally], primary: str) -> None:
        self.document["columns"] = [dataclasses.asdict(t) for t in tallies]
        for tally in tallies:
            self.say(
                f"{tally.column}: {tally.retired} re-encrypted, "
                f"{tally.current} already under the {primary}"
            )
        unreadable = sum(t.unreadable for t in tallies)
        if unreadable:
            fail(
                f"{unreadable} row(s) decrypt with no key of the ring and were left as they are: "
                f"a process may be using another key (check {KEY_SETTING} and ORCH_DATA_DIR)"
            )


def _with_key_file(db: Database, path: Path, prune: bool, report: _Report) -> None:
    if not path.exists():
        fail(f"no key file at {path} and {KEY_SETTING} is not set: is ORCH_DATA_DIR the server's?")
    report.document["key_file"] = str(path)
    report.say(f"key file: {path}")
    if prune:
        dropped = key_rotation.prune_key_file(db, path)
        report.document["dropped_keys"] = dropped
        report.say(
            f"every stored ciphertext decrypts with the primary key; dropped {dropped} "
            "retired key(s)"
        )
        return
    retired, tallies = key_rotation.rotate_key_file(db, path)
    report.document["retired_keys"] = retired
    report.say(f"wrote a new primary key; kept {retired} retired key(s) after it for decryption")
    report.tallies(tallies, "new key")
    report.say(
        "once no process uses a retired key any more, drop them with: "
        "orchestrator secrets rotate-key --prune"
    )


def _with_setting(db: Database, configured: str, prune: bool, report: _Report) -> None:
    report.document["key_setting"] = KEY_SETTING
    if prune:
        retired = key_rotation.check_configured_prune(db, configured)
        report.document["removable_keys"] = retired
        report.say(
            f"every stored ciphertext decrypts with the first key of {KEY_SETTING}; you may "
            f"remove the {retired} other key(s) from it on every process"
        )
        return
    report.say(
        f"{KEY_SETTING} is set: no key generated; re-encrypting everything under its first key "
        "(to rotate: put a new key first in it, the old ones after it, on every process, then "
        "run this)"
    )
    report.tallies(key_rotation.rotate_configured_key(db, configured), "first key")


def rotate(prune: bool, as_json: bool) -> None:
    """Re-encrypt every secret value under a new key (or the first key of ORCH_SECRET_KEY);
    with ``prune``, drop the retired keys. Prints counts, never a key or a value."""
    settings = _settings()
    report = _Report(as_json)
    try:
        db = _database(settings)
        try:
            if settings.secret_key and settings.secret_key.get_secret_value():
                _with_setting(db, settings.secret_key.get_secret_value(), prune, report)
            else:
                _with_key_file(db, settings.data_dir / KEY_FILE, prune, report)
        finally:
            db.dispose()
    except OrchestratorError as exc:
        fail(exc.message)
    if as_json:
        print_json({"prune": prune, **report.document})
