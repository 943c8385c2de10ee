"""retention: a project's own retention, and the index that finds expired finished jobs

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A project may keep its finished jobs longer or shorter than the server's default
    (``projects.retention``, seconds; 0 keeps them; null: the default), and collection finds
    a project's oldest finished jobs by index, not by a scan."""
    op.add_column("projects", sa.Column("retention", sa.Float(), nullable=True))
    op.create_index("ix_jobs_project_finish", "jobs", ["project", "finish_time"])


def downgrade() -> None:
    """Forget the projects' retention and the index."""
    op.drop_index("ix_jobs_project_finish", table_name="jobs")
    # In place, not by copying the table (SQLite's batch mode would drop ``projects``, which
    # other tables' foreign keys refer to); SQLite has DROP COLUMN since 3.35.
    op.drop_column("projects", "retention")
