"""job dependencies: a job may wait, pending, for other jobs to end

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

# The unique-name index covers unfinished jobs; a pending job is one (before: it did not exist).
NAMED = "name IS NOT NULL AND status IN ({})"
BEFORE = NAMED.format("'scheduled', 'queued', 'starting', 'running'")
AFTER = NAMED.format("'pending', 'scheduled', 'queued', 'starting', 'running'")


def _name_index(where: str) -> None:
    op.drop_index("ux_jobs_unfinished_name", table_name="jobs")
    op.create_index(
        "ux_jobs_unfinished_name",
        "jobs",
        ["project", "queue", "name"],
        unique=True,
        sqlite_where=sa.text(where),
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    """Add ``job_dependencies`` (indexed by the dependency, which releases its dependents as it
    ends), ``jobs.open_dependencies`` and ``jobs.input_from`` (0 and null on existing jobs,
    which have no dependencies), and count pending jobs in the unique-name index."""
    op.create_table(
        "job_dependencies",
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("dependency_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("release_on", sa.String(length=16), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "dependency_id"),
    )
    op.create_index("ix_job_dependencies_dependency", "job_dependencies", ["dependency_id"])
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(
            sa.Column("open_dependencies", sa.Integer(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("input_from", sa.JSON(), nullable=True))
    _name_index(AFTER)


def downgrade() -> None:
    """Drop the dependencies: an older release knows no ``pending`` job, so those still
    waiting are cancelled first (their dependencies can no longer release them)."""
    op.execute(
        "UPDATE jobs SET status = 'cancelled', reason = 'cancelled', finish_time = update_time, "
        "error = 'cancelled by a downgrade: dependencies are not known before 0016' "
        "WHERE status = 'pending'"
    )
    _name_index(BEFORE)
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("input_from")
        batch_op.drop_column("open_dependencies")
    op.drop_index("ix_job_dependencies_dependency", table_name="job_dependencies")
    op.drop_table("job_dependencies")
