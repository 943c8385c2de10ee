"""A consistent copy of a SQLite database, taken while servers write to it.

What it owns: the copy, made with SQLite's online backup API into a new 0600 file. What it must
not do: overwrite a file, or copy the key file (the copy holds secret values encrypted only; the
key that opens them is kept apart from it, so one stolen file is not both). PostgreSQL is
``pg_dump``'s job (``pg_dump_command``).
"""

from __future__ import annotations

import shlex
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from orchestrator.errors import OrchestratorError
from orchestrator.storage.private_files import create_private_file, sqlite_file

# How long the copy waits for a writer's lock (ms); in WAL mode it reads beside the writers.
BACKUP_BUSY_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class Backup:
    """A finished copy: where from, where to, and its size in bytes."""

    source: Path
    target: Path
    size: int


def backup_sqlite(url: str, target: Path) -> Backup:
    """Copy the SQLite database at ``url`` to ``target`` (a new file, mode 0600).

    One backup step copies every page within one read transaction, so the copy is the database
    as of one moment: the writers go on meanwhile (WAL), and a copy made in several steps would
    start over each time another process wrote.
    """
    source = sqlite_file(url)
    if source is None:
        raise OrchestratorError("only a SQLite database file can be copied this way")
    if not source.is_file():
        raise OrchestratorError(f"there is no database at {source}")
    try:
        created = create_private_file(target)
    except OSError as exc:
        raise OrchestratorError(f"cannot create {target}: {exc.strerror}") from None
    if not created:
        raise OrchestratorError(f"{target} exists; the backup never overwrites a file")
    try:
        _copy(source, target)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return Backup(source=source, target=target, size=target.stat().st_size)


def _copy(source: Path, target: Path) -> None:
    # An ordinary connection, not mode=ro: a read-only one leaves the -wal and -shm files it had
    # to create behind when no server runs; the last ordinary one to close removes them.
    reader = sqlite3.connect(source, timeout=BACKUP_BUSY_TIMEOUT_MS / 1000)
    try:
        writer = sqlite3.connect(target)
        try:
            reader.backup(writer, pages=-1)
            # A file that stands alone: no WAL beside it to be forgotten when it is copied.
            writer.execute("PRAGMA journal_mode=DELETE")
            check = writer.execute("PRAGMA quick_check").fetchone()
        finally:
            writer.close()
    except sqlite3.Error as exc:
        raise OrchestratorError(f"the copy failed: {exc}") from None
    finally:
        reader.close()
    if check != ("ok",):
        raise OrchestratorError(f"the copy failed its check: {check[0] if check else 'no answer'}")


def pg_dump_command(url: str, target: str) -> str:
    """The ``pg_dump`` command that backs up the PostgreSQL database at ``url``, without its
    password (``pg_dump`` reads it from ``PGPASSWORD`` or ``~/.pgpass``)."""
    parsed = sa.engine.make_url(url)
    parts = ["pg_dump", "--format=custom", f"--file={target}"]
    if parsed.host:
        parts.append(f"--host={parsed.host}")
    if parsed.port:
        parts.append(f"--port={parsed.port}")
    if parsed.username:
        parts.append(f"--username={parsed.username}")
    parts.append(parsed.database or "postgres")
    return shlex.join(parts)
