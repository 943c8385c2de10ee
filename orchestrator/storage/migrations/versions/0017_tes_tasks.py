"""GA4GH TES tasks: their names and tags (indexed for the task list) and their attempts' logs

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None

NAMED = sa.text("name IS NOT NULL")


def upgrade() -> None:
    """Add ``tes_tasks`` (a task's job, project and name), ``tes_task_tags`` and
    ``tes_attempt_logs``; no existing job is a TES task, so they start empty."""
    op.create_table(
        "tes_tasks",
        sa.Column("job_seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column(
            "name",
            sa.String(255).with_variant(sa.String(255, collation="C"), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("job_seq"),
        sa.UniqueConstraint("job_id"),
    )
    op.create_index("ix_tes_tasks_project_seq", "tes_tasks", ["project", "job_seq"])
    op.create_index(
        "ix_tes_tasks_project_name",
        "tes_tasks",
        ["project", "name", "job_seq"],
        sqlite_where=NAMED,
        postgresql_where=NAMED,
    )
    op.create_table(
        "tes_task_tags",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("job_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "key"),
    )
    op.create_index(
        "ix_tes_task_tags_lookup", "tes_task_tags", ["project", "key", "value", "job_seq"]
    )
    op.create_table(
        "tes_attempt_logs",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("attempt", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=True),
        sa.Column("end_time", sa.DateTime(), nullable=True),
        sa.Column("executors", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("system_logs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "attempt"),
    )


def downgrade() -> None:
    """Drop the TES tables; the tasks' jobs stay, as jobs of the reserved definition ``tes``."""
    op.drop_table("tes_attempt_logs")
    op.drop_index("ix_tes_task_tags_lookup", table_name="tes_task_tags")
    op.drop_table("tes_task_tags")
    op.drop_index("ix_tes_tasks_project_name", table_name="tes_tasks")
    op.drop_index("ix_tes_tasks_project_seq", table_name="tes_tasks")
    op.drop_table("tes_tasks")
