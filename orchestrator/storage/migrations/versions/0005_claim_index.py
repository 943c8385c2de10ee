"""claim indexes: a queue's queued jobs in claim order; waiting jobs by due time

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Index what the claim and the due-time reads look up, so they stay flat at any depth.

    ``ix_jobs_queue_claim`` (queue, status, then job priority descending and submit order) lets
    the claim take a queue's next job with ``LIMIT 1`` instead of sorting every waiting job; it
    replaces ``ix_jobs_project_queue_status``, its prefix. ``ix_jobs_status_run_after`` and
    ``ix_jobs_status_schedule_at`` answer "earliest backoff or schedule" from the index; they
    replace ``ix_jobs_claim`` (status, priority, seq), which the claim no longer reads.
    """
    op.create_index(
        "ix_jobs_queue_claim",
        "jobs",
        ["project", "queue", "status", sa.text("priority DESC"), "seq"],
    )
    op.create_index("ix_jobs_status_run_after", "jobs", ["status", "run_after"])
    op.create_index("ix_jobs_status_schedule_at", "jobs", ["status", "schedule_at"])
    op.drop_index("ix_jobs_project_queue_status", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")


def downgrade() -> None:
    """Restore the indexes ``upgrade`` replaced."""
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "seq"])
    op.create_index("ix_jobs_project_queue_status", "jobs", ["project", "queue", "status"])
    op.drop_index("ix_jobs_status_schedule_at", table_name="jobs")
    op.drop_index("ix_jobs_status_run_after", table_name="jobs")
    op.drop_index("ix_jobs_queue_claim", table_name="jobs")
