"""failure reasons: why a job's last attempt did not succeed

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``jobs.reason`` (a ``rules.reasons`` name, or null): null on every existing job,
    whose attempts ended before reasons were recorded."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("reason", sa.String(length=32), nullable=True))


def downgrade() -> None:
    """Drop ``jobs.reason``: an older release shows a failed job's exit code and error only."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("reason")
