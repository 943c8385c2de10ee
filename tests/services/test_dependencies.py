"""Dependencies on a real database (SQLite and PostgreSQL), no runner: a failure cascades down
a chain deeper than Python's recursion allows, each job settled in the transaction where its
dependency ended; and retention leaves no link behind."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise

import pytest
import sqlalchemy as sa
from sqlmodel import col, func, select

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import jobs, retention
from orchestrator.services.retention import Retention
from orchestrator.storage.db import Database
from orchestrator.storage.models import Job, JobDependency, utcnow

from .test_migrations import (
    applied_revisions,
    job_id_of,
    migrate_down_to,
    migrate_to,
    revisions_from,
    seed,
    table_names,
)
from .test_retention import register_noop

DAY = 86400.0


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    register_noop(built, "default")
    yield built
    built.close()


def submit(services: Services, session: object, **body: object) -> Job:
    request = JobCreate.model_validate({"definition": "noop", **body})
    return jobs.submit(
        session,  # type: ignore[arg-type]
        services.box,
        None,
        "default",
        request,
        policy=services.policy,
        limits=services.limits,
    )


def test_a_failure_cascades_down_a_chain_deeper_than_the_recursion_limit(
    services: Services,
) -> None:
    # Each link settled by recursion would take several frames (transition, ended, ...):
    # a chain this long would exhaust the interpreter's stack.
    length = sys.getrecursionlimit() // 3
    with services.db.transaction() as session:
        root = submit(services, session, schedule_at="2999-01-01T00:00:00Z")
        chain = [root.id]
        for _ in range(length):
            chain.append(submit(services, session, depends_on=[{"job": chain[-1]}]).id)
    with services.db.transaction() as session:
        jobs.cancel(session, None, "default", root.id)
    with services.db.read() as session:
        rows = {job.id: job for job in session.exec(select(Job)).all()}
    for dependency, dependent in pairwise(chain):
        job = rows[dependent]
        assert (job.status, job.reason) == (JobStatus.FAILED, FailureReason.DEPENDENCY_FAILED)
        assert job.error == f"dependency {dependency} {rows[dependency].status}"


def test_retention_takes_a_job_s_links_with_it(services: Services) -> None:
    with services.db.transaction() as session:
        dependency = submit(services, session, schedule_at="2999-01-01T00:00:00Z").id
        dependent = submit(services, session, depends_on=[{"job": dependency}]).id
        other = submit(services, session, schedule_at="2999-01-01T00:00:00Z").id
        kept = submit(services, session, depends_on=[{"job": other, "on": "finished"}]).id

    def links() -> set[tuple[str, str]]:
        with services.db.read() as session:
            rows = session.exec(select(JobDependency)).all()
            return {(row.job_id, row.dependency_id) for row in rows}

    assert links() == {(dependent, dependency), (kept, other)}
    with services.db.transaction() as session:
        jobs.cancel(session, None, "default", dependency)  # fails `dependent` with it
        jobs.cancel(session, None, "default", other)  # releases `kept`, queued
    with services.db.transaction() as session:
        removed = retention.collect(
            session, Retention(jobs=DAY, audit=DAY), utcnow() + timedelta(days=2), 100
        )
    assert removed.jobs == 3
    # `kept` waits to run still: its link to the deleted `other` stays with it (shown deleted).
    assert links() == {(kept, other)}
    with services.db.read() as session:
        assert session.exec(select(func.count()).select_from(Job)).one() == 1
        left = session.exec(select(Job).where(col(Job.id) == kept)).one()
        assert left.status is JobStatus.QUEUED


def test_0016_adds_the_links_and_its_downgrade_cancels_what_still_waits(database_url: str) -> None:
    database = Database(database_url)
    try:
        migrate_to(database, "0001")
        seed(database)
        migrate_to(database, "0015")
        assert applied_revisions(database.upgrade_schema()) == revisions_from("0016")
        assert "job_dependencies" in table_names(database)
        waiting, dependency = job_id_of("queued"), job_id_of("scheduled")
        with database.write_engine.begin() as connection:
            counts = connection.execute(sa.text("SELECT DISTINCT open_dependencies FROM jobs"))
            assert counts.scalars().all() == [0]
            connection.execute(
                sa.text("UPDATE jobs SET status = 'pending', open_dependencies = 1 WHERE id = :id"),
                {"id": waiting},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO job_dependencies (job_id, dependency_id, position, release_on) "
                    "VALUES (:job, :dependency, 0, 'succeeded')"
                ),
                {"job": waiting, "dependency": dependency},
            )

        migrate_down_to(database, "0015")
        assert "job_dependencies" not in table_names(database)
        with database.read_engine.connect() as connection:
            status, reason = connection.execute(
                sa.text("SELECT status, reason FROM jobs WHERE id = :id"), {"id": waiting}
            ).one()
            columns = {c["name"] for c in sa.inspect(connection).get_columns("jobs")}
        assert (status, reason) == ("cancelled", "cancelled")
        assert not {"open_dependencies", "input_from"} & columns
    finally:
        database.dispose()
