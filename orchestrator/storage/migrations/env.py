"""Alembic's environment: migrate the connection ``orchestrator.storage.db`` hands over.

``Database.upgrade_schema`` passes its (locked) connection in ``config.attributes``; a developer's
``alembic`` command (alembic.ini at the repository root) gets one from ORCH_DATABASE_URL instead.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import sqlalchemy as sa
from alembic import context
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import Script
from sqlmodel import SQLModel

from orchestrator.storage import models  # noqa: F401  (registers the tables)

config = context.config


def _configure(connection: sa.Connection) -> None:
    applied: list[str] = config.attributes.setdefault("applied", [])

    def record(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Any
    ) -> None:
        if step.is_upgrade and not step.is_stamp:
            script = step.up_revision
            doc = script.doc if isinstance(script, Script) else ""
            applied.append(f"{step.up_revision_id}: {doc}")

    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        # SQLite alters most things only by copying the table: batch mode does that.
        render_as_batch=True,
        # Our SQLite engine begins real transactions, so a failed upgrade rolls back there too.
        transactional_ddl=True,
        on_version_apply=record,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    _configure(connection)
else:
    # ``alembic`` run by a developer: the database the settings name.
    from orchestrator.config import Settings

    engine = sa.create_engine(Settings().resolved_database_url())
    try:
        with engine.connect() as developer_connection:
            _configure(developer_connection)
    finally:
        engine.dispose()
