"""A cancel that ends a queued job while a claim has read it but not yet taken it (SQLite and
PostgreSQL): the claim must not take the cancelled job. On PostgreSQL the claim's read takes no
lock, and its update once overwrote the cancel: the cancelled job ran."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import attempts, definitions, job_queries, jobs
from tests.conftest import TEST_IMAGE


def test_a_job_cancelled_while_a_claim_reads_it_is_not_claimed(
    make_settings: Callable[..., Settings],
) -> None:
    services = Services.build(make_settings(runner_enabled=False))
    try:
        spec = definition_spec.validate_spec(
            {"name": "one", "image": TEST_IMAGE, "command": ["true"]}, "test"
        )
        with services.db.transaction() as session:
            definitions.register(
                session,
                "default",
                spec,
                policy=services.policy,
                limits=services.limits,
                caps=services.caps,
            )
        with services.db.transaction() as session:
            job = jobs.submit(
                session,
                services.box,
                None,
                "default",
                JobCreate(definition="one"),
                policy=services.policy,
                limits=services.limits,
            )

        def cancel() -> None:
            with services.db.transaction() as session:
                jobs.cancel(session, None, "default", job.id)

        cancelled = threading.Event()

        def before(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            # Once the claim has read the queue's head, and before it writes or locks it, the
            # cancel ends the job (in its own transaction, on another connection).
            if cancelled.is_set() or not statement.lstrip().upper().startswith(
                ("UPDATE JOBS", "SELECT")
            ):
                return
            if statement.lstrip().upper().startswith("SELECT") and "FOR UPDATE" not in statement:
                return
            cancelled.set()
            canceller = threading.Thread(target=cancel)
            canceller.start()
            canceller.join(30)

        engine = services.db.write_engine
        if services.db.is_postgres:
            sa.event.listen(engine, "before_cursor_execute", before)
            try:
                with services.db.transaction() as session:
                    claimed = attempts.claim(session, "race-runner")
            finally:
                sa.event.remove(engine, "before_cursor_execute", before)
            assert cancelled.is_set()
        else:
            # SQLite: writers are one at a time (BEGIN IMMEDIATE); the cancel comes first.
            cancel()
            with services.db.transaction() as session:
                claimed = attempts.claim(session, "race-runner")
        assert claimed is None
        with services.db.read() as session:
            assert job_queries.get(session, "default", job.id).status is JobStatus.CANCELLED
    finally:
        services.close()
