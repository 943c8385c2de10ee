"""drop-in APIs: a job's API, a delivery's signing key, the APIs' own secrets

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``jobs.api``, ``webhook_deliveries.signing_key`` (both empty: native jobs, signed
    with the project's secret) and the ``api_secrets`` table."""
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("api", sa.String(length=16), nullable=True))
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.add_column(sa.Column("signing_key", sa.String(length=16), nullable=True))
    op.create_table(
        "api_secrets",
        sa.Column("name", sa.String(length=16), nullable=False),
        sa.Column("secret_ciphertext", sa.String(), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.drop_table("api_secrets")
    with op.batch_alter_table("webhook_deliveries") as batch_op:
        batch_op.drop_column("signing_key")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("api")
