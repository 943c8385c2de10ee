"""installation: one row naming this database's installation, made once

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Give the database its installation id, which every container, HTTP worker and run dir
    it makes carries, so two installations on one Docker engine never touch each other's."""
    table = op.create_table(
        "installation",
        sa.Column("id", sa.String(length=32), primary_key=True),
        sa.Column("create_time", sa.DateTime(), nullable=False),
    )
    op.bulk_insert(
        table,
        [{"id": uuid.uuid4().hex, "create_time": datetime.now(UTC).replace(tzinfo=None)}],
    )


def downgrade() -> None:
    """Forget the installation id."""
    op.drop_table("installation")
