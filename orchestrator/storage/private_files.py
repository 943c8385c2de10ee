"""The modes of the files only this server's user may read: the data dir (0700), the SQLite
database with its journals, the key file and the admin token (0600).

What it owns: creating such a file with exactly its mode, whatever the umask, and tightening the
ones an older release (or a copy made by hand) left readable by others. What it must not do:
loosen anything, or touch files it was not told about (a data dir may hold the operator's own).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

logger = logging.getLogger(__name__)

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
# What SQLite writes beside a database file. It gives a new journal, WAL or shared-memory file
# the database file's own mode, so a 0600 database keeps them 0600; an older one may not have.
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
# The file lock beside a SQLite database that the processes sharing it take for steps they must
# not take together (``Database.shared_lock``). Its name is from when migrating was the only one.
LOCK_FILE_SUFFIX = ".migrate-lock"


@dataclass(frozen=True)
class Tightened:
    """One path whose mode was tightened, and the mode it had."""

    path: Path
    before: int

    def __str__(self) -> str:
        return f"{self.path} ({self.before:04o})"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL; None for another database or one in memory."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def database_files(database: Path) -> list[Path]:
    """A SQLite database file and the files SQLite (and its lock file) keep beside it."""
    sides = (*SQLITE_SIDE_FILES, LOCK_FILE_SUFFIX)
    return [database, *(database.with_name(database.name + side) for side in sides)]


def create_private_file(path: Path) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; True when it was created now."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return False
    try:
        # os.open's mode passes through the umask, which can only take bits away; fchmod makes
        # it exactly 0600 even under an odd umask such as 0277.
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
    return True


def prepare_sqlite_file(database: Path) -> None:
    """Before SQLite opens ``database``: its directory exists, and a new database file is made
    empty and 0600 (an empty file is an empty database), so SQLite never creates it 0644."""
    if not database.parent.exists():
        database.parent.mkdir(parents=True, exist_ok=True)
        database.parent.chmod(PRIVATE_DIR_MODE)
    create_private_file(database)


def _tighten(path: Path, *, follow: bool = False) -> Tightened | None:
    """Take away the group's and others' bits of ``path``, nothing else (0644 becomes 0600,
    0755 becomes 0700); a link is followed only if ``follow``."""
    try:
        info = path.stat() if follow else path.lstat()
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        # A link's target may be anyone's file; its mode is not ours to change.
        return None
    before = stat.S_IMODE(info.st_mode)
    if not before & 0o077:
        return None
    try:
        path.chmod(before & 0o7700)
    except OSError as exc:
        logger.warning(
            "could not make %s private (mode %04o): %s",
            path,
            before,
            exc.strerror,
            extra={"action": "private_file_not_tightened"},
        )
        return None
    return Tightened(path, before)


def secure_data_dir(data_dir: Path, private_files: Iterable[Path]) -> list[Tightened]:
    """Make the data dir (created if missing) 0700 and each of ``private_files`` that exists
    0600 (what the server creates has these modes; here only the group's and others' bits
    are taken away); what was tightened, logged once at INFO.

    Run at every start, so a data dir made by an older release, restored from a backup or
    copied by hand is fixed too.
    """
    if not data_dir.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(PRIVATE_DIR_MODE)  # exactly 0700, whatever the umask
    # The data dir is the one the operator named: through a link if it is one.
    tightened = [_tighten(data_dir, follow=True)]
    tightened.extend(_tighten(path) for path in private_files)
    done = [item for item in tightened if item is not None]
    if done:
        logger.info(
            "took away group and other access (path, mode before): %s",
            ", ".join(str(item) for item in done),
            extra={"action": "private_files_tightened"},
        )
    return done
