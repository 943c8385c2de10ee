"""``orchestrator gc``: delete what is past retention now (servers also do it in the
background), or with ``--dry-run`` count what would go. Works on the database directly."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import typer

from orchestrator.cli.db import opened_database
from orchestrator.cli.output import AsJson, fail, print_json

if TYPE_CHECKING:
    from orchestrator.config import Settings
    from orchestrator.services.retention import Removed
    from orchestrator.storage.db import Database


def gc(
    dry_run: bool = typer.Option(False, "--dry-run", help="Count what would go; delete nothing."),
    as_json: AsJson = False,
) -> None:
    """Delete finished jobs (with their events, logs and webhook deliveries), schedule runs,
    audit entries and idempotency keys past retention, and runners silent that long (a day at
    least) that run nothing [ORCH_RETENTION, ORCH_AUDIT_RETENTION,
    ORCH_IDEMPOTENCY_TTL]."""
    with opened_database() as (settings, database):
        removed = _run(settings, database, dry_run)
    if as_json:
        print_json({"dry_run": dry_run, **dataclasses.asdict(removed)})
        return
    verb = "would delete" if dry_run else "deleted"
    typer.echo(
        f"{verb} {removed.jobs} finished jobs ({removed.events} events, {removed.logs} log "
        f"batches, {removed.deliveries} webhook deliveries), {removed.schedule_runs} schedule "
        f"runs, {removed.audit_events} audit entries, {removed.idempotency_keys} idempotency "
        f"keys and {removed.runners} runners long gone"
    )


def _run(settings: Settings, database: Database, dry_run: bool) -> Removed:
    from orchestrator.services import retention
    from orchestrator.services.retention import Retention
    from orchestrator.storage import migrations
    from orchestrator.storage.models import utcnow

    if database.schema_revision() != migrations.head():
        fail("the schema is not at the newest revision: run `orchestrator db upgrade`", code=2)
    keep = Retention.from_settings(settings)
    if dry_run:
        with database.read() as session:
            return retention.expired(session, keep, utcnow())
    collection = retention.Collection(
        database, keep, utcnow, max_batch=settings.gc_batch, batch_time=settings.gc_batch_time
    )
    return collection.until_done()
