"""worker containers: the HTTP worker containers runners keep, as they record them

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``worker_containers`` (empty: the workers of a running runner are recorded from its
    next process on, which removes the ones it finds anyway)."""
    op.create_table(
        "worker_containers",
        sa.Column("container_id", sa.String(length=64), nullable=False),
        sa.Column("runner", sa.String(length=255), nullable=False),
        sa.Column("session", sa.String(length=36), nullable=False),
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("queue", sa.String(length=63), nullable=False),
        sa.Column("definition", sa.String(length=63), nullable=False),
        sa.Column("definition_version", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("container_id"),
    )
    op.create_index("ix_worker_containers_queue", "worker_containers", ["project", "queue"])


def downgrade() -> None:
    """Drop ``worker_containers``."""
    op.drop_index("ix_worker_containers_queue", table_name="worker_containers")
    op.drop_table("worker_containers")
