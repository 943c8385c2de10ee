"""array jobs: a parent and its children, indexed 0..size-1

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``jobs.parent_id``, ``array_index``, ``array_size`` and ``unfinished_children``
    (null on every existing job: none is an array) and the indexes a parent's children are
    read by (partial: most jobs are not children)."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("parent_id", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("array_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("array_size", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("unfinished_children", sa.Integer(), nullable=True))
    where = sa.text("parent_id IS NOT NULL")
    op.create_index(
        "ix_jobs_parent_seq",
        "jobs",
        ["parent_id", "seq"],
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_index(
        "ix_jobs_parent_status",
        "jobs",
        ["parent_id", "status", "seq"],
        sqlite_where=where,
        postgresql_where=where,
    )


def downgrade() -> None:
    """Drop what ``upgrade`` added: an older release knows no arrays (downgrade once none is
    left, or their children stay as plain jobs)."""
    op.drop_index("ix_jobs_parent_status", table_name="jobs")
    op.drop_index("ix_jobs_parent_seq", table_name="jobs")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("unfinished_children")
        batch_op.drop_column("array_size")
        batch_op.drop_column("array_index")
        batch_op.drop_column("parent_id")
