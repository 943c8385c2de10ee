"""webhook secret rotation: the secret a rotation replaced, kept for a grace period

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """A project keeps the signing secret its last rotation replaced (encrypted) and when it
    did (``projects.previous_webhook_secret_ciphertext``, ``webhook_secret_rotate_time``); a
    drop-in API's secret keeps its previous one (``api_secrets.previous_secret_ciphertext``,
    its rotation time being ``update_time``). All empty: no rotation has a grace period yet."""
    # In place, not by copying the table: SQLite's batch mode would drop ``projects``, which
    # other tables' foreign keys refer to.
    op.add_column(
        "projects", sa.Column("previous_webhook_secret_ciphertext", sa.String(), nullable=True)
    )
    op.add_column("projects", sa.Column("webhook_secret_rotate_time", sa.DateTime(), nullable=True))
    op.add_column(
        "api_secrets", sa.Column("previous_secret_ciphertext", sa.String(), nullable=True)
    )


def downgrade() -> None:
    """Forget the previous secrets: deliveries are then signed with the current ones only."""
    # SQLite has DROP COLUMN since 3.35.
    op.drop_column("api_secrets", "previous_secret_ciphertext")
    op.drop_column("projects", "webhook_secret_rotate_time")
    op.drop_column("projects", "previous_webhook_secret_ciphertext")
