"""Alembic migrations of the database schema, run in code (no alembic.ini needed at run time).

This module owns the Alembic calls; ``orchestrator.storage.db`` owns the connection and the
lock around them. Revisions live in ``versions/``, one module each, named ``NNNN_what.py`` after
their revision id; ``env.py`` is Alembic's environment.

Alembic (with Mako) costs a process about 10 MB and 0.2 s to import, so it is imported only
when a command needs it: a start on a schema that is already current (``is_current``) reads
the revision with plain SQL and never loads it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

if TYPE_CHECKING:
    from alembic.config import Config

SCRIPT_LOCATION = Path(__file__).parent
# The schema ``create_all`` made before migrations existed: such a database is stamped here.
BASELINE = "0001"


@dataclass
class Upgrade:
    """What one upgrade did: the revision before and after, the revisions applied, a stamp."""

    before: str | None
    after: str | None
    applied: list[str] = field(default_factory=list)
    stamped: bool = False


@contextmanager
def _quiet() -> Iterator[None]:
    """Alembic logs every step at INFO; the caller logs only the revisions applied."""
    alembic_logger = logging.getLogger("alembic")
    level = alembic_logger.level
    alembic_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        alembic_logger.setLevel(level)


def _config(connection: sa.Connection) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes["connection"] = connection
    return config


def head() -> str | None:
    """The newest revision in ``versions/``, as Alembic reads it."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPT_LOCATION)).get_current_head()


def newest() -> str:
    """The newest revision by file name (``versions/NNNN_*.py``), without importing Alembic."""
    return max(path.name[:4] for path in (SCRIPT_LOCATION / "versions").glob("[0-9]" * 4 + "_*.py"))


def is_current(connection: sa.Connection) -> str | None:
    """The database's revision when it is the newest (nothing to migrate), else None."""
    found = None
    if sa.inspect(connection).has_table("alembic_version"):
        found = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    connection.rollback()
    return found if found == newest() else None


def current(connection: sa.Connection) -> str | None:
    """The database's revision (None: empty, or created before migrations)."""
    from alembic.runtime.migration import MigrationContext

    with _quiet():
        revision = MigrationContext.configure(connection).get_current_revision()
    # Alembic's configure left a transaction open; end it so each command begins its own.
    connection.rollback()
    return revision


def _created_before_migrations(connection: sa.Connection) -> bool:
    inspector = sa.inspect(connection)
    found = inspector.has_table("jobs") and not inspector.has_table("alembic_version")
    connection.rollback()
    return found


def upgrade(connection: sa.Connection) -> Upgrade:
    """Upgrade to the head revision; a database created before migrations is stamped first.

    The caller holds the lock that keeps two processes from migrating at once.
    """
    from alembic import command

    config = _config(connection)
    result = Upgrade(before=current(connection), after=None)
    with _quiet():
        if result.before is None and _created_before_migrations(connection):
            command.stamp(config, BASELINE)
            result.stamped = True
            result.before = BASELINE
        config.attributes["applied"] = result.applied
        command.upgrade(config, "head")
    result.after = current(connection)
    return result
