"""log streams and queue samples: which stream a stored log chunk came from; a queue's depth
and throughput, a row a minute

Revision ID: 0018
Revises: 0016
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``job_logs.stream`` (1 stdout, 2 stderr; null on existing rows, whose stream is not
    known, and on the orchestrator's own lines) and ``queue_samples`` (per queue and minute:
    jobs waiting and running at the sample, jobs ended in the minute before it)."""
    with op.batch_alter_table("job_logs") as batch_op:
        batch_op.add_column(sa.Column("stream", sa.SmallInteger(), nullable=True))
    op.create_table(
        "queue_samples",
        sa.Column("project", sa.String(length=63), nullable=False),
        sa.Column("queue", sa.String(length=63), nullable=False),
        sa.Column("minute", sa.DateTime(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.Column("running", sa.Integer(), nullable=False),
        sa.Column("ended", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("project", "queue", "minute"),
    )
    op.create_index("ix_queue_samples_minute", "queue_samples", ["minute"])


def downgrade() -> None:
    """Drop both: an older release neither writes nor reads them."""
    op.drop_index("ix_queue_samples_minute", table_name="queue_samples")
    op.drop_table("queue_samples")
    with op.batch_alter_table("job_logs") as batch_op:
        batch_op.drop_column("stream")
