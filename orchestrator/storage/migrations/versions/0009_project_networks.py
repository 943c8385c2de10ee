"""project networks: a definition's default network is its project's own, not Docker's bridge

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import hashlib
import json

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# Stored before this revision, ``network: bridge`` was what every definition without a network
# got (and no different from asking for it): from now on that default is the project's own
# network (``null``), and ``bridge`` is Docker's shared network, which the policy rules.
UNFINISHED = ("scheduled", "queued", "starting", "running")


def _spec_hash(spec: dict[str, object]) -> str:
    # ``rules.definition_spec.spec_hash`` as of this revision, kept here unchanged.
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()


def _set_definitions_network(bind: sa.Connection, old: str | None, new: str | None) -> None:
    """Stored definitions whose spec sets ``network`` to ``old`` set it to ``new`` (their hash
    made again)."""
    definitions = sa.table(
        "definitions",
        sa.column("id", sa.Integer),
        sa.column("spec", sa.JSON),
        sa.column("spec_hash", sa.String),
    )
    for row in bind.execute(sa.select(definitions.c.id, definitions.c.spec)).all():
        spec = row.spec
        if isinstance(spec, dict) and "network" in spec and spec["network"] == old:
            spec = {**spec, "network": new}
            bind.execute(
                definitions.update()
                .where(definitions.c.id == row.id)
                .values(spec=spec, spec_hash=_spec_hash(spec))
            )


def upgrade() -> None:
    """Definitions and unfinished jobs stored with ``network: bridge`` run on their project's
    network, as definitions registered from now on without a network do."""
    bind = op.get_bind()
    _set_definitions_network(bind, "bridge", None)
    statuses = ", ".join(f"'{status}'" for status in UNFINISHED)
    if bind.dialect.name == "postgresql":
        op.execute(
            "UPDATE jobs SET container = jsonb_set(container::jsonb, '{network}', 'null')::json "
            f"WHERE status IN ({statuses}) AND container->>'network' = 'bridge'"
        )
    else:
        op.execute(
            "UPDATE jobs SET container = json_set(container, '$.network', json('null')) "
            f"WHERE status IN ({statuses}) AND json_extract(container, '$.network') = 'bridge'"
        )


def downgrade() -> None:
    """Back to Docker's bridge: an older release knows no project networks."""
    bind = op.get_bind()
    _set_definitions_network(bind, None, "bridge")
    statuses = ", ".join(f"'{status}'" for status in UNFINISHED)
    if bind.dialect.name == "postgresql":
        op.execute(
            "UPDATE jobs SET container = jsonb_set(container::jsonb, '{network}', '\"bridge\"')"
            f"::json WHERE status IN ({statuses}) "
            "AND container->'network' IS NOT NULL AND container->>'network' IS NULL"
        )
    else:
        op.execute(
            "UPDATE jobs SET container = json_set(container, '$.network', 'bridge') "
            f"WHERE status IN ({statuses}) AND json_type(container, '$.network') = 'null'"
        )
