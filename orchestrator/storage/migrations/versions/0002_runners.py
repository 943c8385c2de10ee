"""runners: the runners table and a job's interrupted attempts

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``runners`` (with a row for each runner holding jobs) and
    ``jobs.interrupted_attempts`` (0 on every existing job)."""
    op.create_table(
        "runners",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("session", sa.String(length=36), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("docker_host", sa.String(length=1024), nullable=False),
        sa.Column("capacity", sa.Integer(), nullable=False),
        sa.Column("queues", sa.JSON(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("docker", sa.String(length=16), nullable=False),
        sa.Column("docker_error", sa.String(), nullable=True),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("start_time", sa.DateTime(), nullable=False),
        sa.Column("heartbeat_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("jobs") as batch_op:
        # The server default fills existing rows; new rows get the model's 0 as well.
        batch_op.add_column(
            sa.Column("interrupted_attempts", sa.Integer(), nullable=False, server_default="0")
        )
    # Runners of the older release holding jobs get a row (with no session: any process may
    # take the name) whose lease starts now: if none comes back under that name, another
    # runner takes their jobs back once it runs out, instead of leaving them running forever.
    now = datetime.now(UTC).replace(tzinfo=None)
    op.get_bind().execute(
        sa.text(
            "INSERT INTO runners (name, session, hostname, pid, docker_host, capacity,"
            " state, docker, version, start_time, heartbeat_time)"
            " SELECT DISTINCT runner, '', '', 0, '', 0, 'active', 'unknown', '', :now, :now"
            " FROM jobs"
            " WHERE runner IS NOT NULL AND status IN ('starting', 'running')"
        ),
        {"now": now},
    )


def downgrade() -> None:
    """Drop ``jobs.interrupted_attempts`` and ``runners``."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("interrupted_attempts")
    op.drop_table("runners")
