"""webhook credentials: out of the stored URLs, to be encrypted apart

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

MASK = "***"

# The columns as this revision reads and writes them (the models may change after it).
jobs = sa.table("jobs", sa.column("id", sa.String), sa.column("webhook", sa.String))
deliveries = sa.table(
    "webhook_deliveries",
    sa.column("id", sa.Integer),
    sa.column("job_id", sa.String),
    sa.column("url", sa.String),
)
schedules = sa.table(
    "schedules",
    sa.column("id", sa.String),
    sa.column("target_kind", sa.String),
    sa.column("target", sa.JSON),
)


def _replace_userinfo(url: str, userinfo: str) -> str:
    netloc = urlsplit(url).netloc
    return url.replace(f"//{netloc}", f"//{userinfo}@{netloc.rpartition('@')[2]}", 1)


def _split(url: str) -> tuple[str, str | None]:
    """``url`` with ``***`` for its userinfo, and that userinfo (None when it has none)."""
    userinfo, at, _ = urlsplit(url).netloc.rpartition("@")
    if not at or not userinfo:
        return url, None
    return _replace_userinfo(url, MASK), userinfo


def _secure_delete(connection: sa.Connection, value: int) -> int:
    """Set SQLite's ``secure_delete`` (overwrite what a write replaces or deletes, instead of
    leaving it in the file's free space); the value it had."""
    previous = int(connection.exec_driver_sql("PRAGMA secure_delete").scalar_one())
    connection.exec_driver_sql(f"PRAGMA secure_delete = {value}")
    return previous


def upgrade() -> None:
    """Take the userinfo (user and password) out of every stored webhook URL: jobs, their
    deliveries and the job targets of schedules keep the URL with ``***`` in its place.

    A migration has no key, so each userinfo goes to ``unsealed_webhook_credentials`` in the
    clear; an API server encrypts it into the new ``webhook_auth_ciphertext`` column of its job
    or schedule as it starts, and deletes that row. On SQLite the replaced bytes are overwritten.
    """
    connection = op.get_bind()
    sqlite = connection.dialect.name == "sqlite"
    previous = _secure_delete(connection, 1) if sqlite else 0
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.add_column(sa.Column("webhook_auth_ciphertext", sa.String(), nullable=True))
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.add_column(sa.Column("webhook_auth_ciphertext", sa.String(), nullable=True))
    unsealed = op.create_table(
        "unsealed_webhook_credentials",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=True),
        sa.Column("schedule_id", sa.String(length=36), nullable=True),
        sa.Column("userinfo", sa.String(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    staged: list[dict[str, Any]] = []
    found = sa.select(jobs.c.id, jobs.c.webhook).where(jobs.c.webhook.like("%@%"))
    for job_id, url in connection.execute(found).all():
        shown, userinfo = _split(url)
        if userinfo is not None:
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(webhook=shown))
            staged.append({"job_id": job_id, "schedule_id": None, "userinfo": userinfo})
    # A delivery's URL is its job's: the sender takes the credentials from the job.
    found = sa.select(deliveries.c.id, deliveries.c.url).where(deliveries.c.url.like("%@%"))
    for delivery_id, url in connection.execute(found).all():
        shown, userinfo = _split(url)
        if userinfo is not None:
            update = deliveries.update().where(deliveries.c.id == delivery_id)
            connection.execute(update.values(url=shown))
    found = sa.select(schedules.c.id, schedules.c.target).where(schedules.c.target_kind == "job")
    for schedule_id, target in connection.execute(found).all():
        shown, userinfo = _split(target.get("webhook") or "")
        if userinfo is not None:
            update = schedules.update().where(schedules.c.id == schedule_id)
            connection.execute(update.values(target={**target, "webhook": shown}))
            staged.append({"job_id": None, "schedule_id": schedule_id, "userinfo": userinfo})
    if staged:
        op.bulk_insert(unsealed, staged)
    if sqlite:
        _secure_delete(connection, previous)


def downgrade() -> None:
    """Put the userinfo no server has encrypted yet back into its URLs, and drop what
    ``upgrade`` added. Encrypted userinfo cannot come back (a migration has no key): those
    URLs keep ``***``."""
    connection = op.get_bind()
    unsealed = sa.table(
        "unsealed_webhook_credentials",
        sa.column("job_id", sa.String),
        sa.column("schedule_id", sa.String),
        sa.column("userinfo", sa.String),
    )
    for job_id, schedule_id, userinfo in connection.execute(sa.select(unsealed)).all():
        if job_id is not None:
            url = connection.execute(
                sa.select(jobs.c.webhook).where(jobs.c.id == job_id)
            ).scalar_one()
            update = jobs.update().where(jobs.c.id == job_id)
            connection.execute(update.values(webhook=_replace_userinfo(url, userinfo)))
            update = deliveries.update().where(deliveries.c.job_id == job_id)
            connection.execute(update.values(url=_replace_userinfo(url, userinfo)))
        else:
            target = connection.execute(
                sa.select(schedules.c.target).where(schedules.c.id == schedule_id)
            ).scalar_one()
            restored = {**target, "webhook": _replace_userinfo(target["webhook"], userinfo)}
            update = schedules.update().where(schedules.c.id == schedule_id)
            connection.execute(update.values(target=restored))
    op.drop_table("unsealed_webhook_credentials")
    with op.batch_alter_table("schedules") as batch_op:
        batch_op.drop_column("webhook_auth_ciphertext")
    with op.batch_alter_table("jobs") as batch_op:
        batch_op.drop_column("webhook_auth_ciphertext")
