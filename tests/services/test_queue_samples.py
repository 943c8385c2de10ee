"""The queue samples behind the console's chart, on SQLite and PostgreSQL: a row per queue per
minute with its depth and the jobs it ended (the previous minute's count completed by the next
pass), array parents not counted, rows past two hours deleted."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.queues import QueueCreate
from orchestrator.services import definitions, jobs, queue_samples, queues
from orchestrator.services.audit import SYSTEM
from orchestrator.storage.models import Job
from tests.conftest import TEST_IMAGE

PROJECT = "default"
NOON = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    with built.db.transaction() as session:
        definitions.register(
            session,
            PROJECT,
            definition_spec.validate_spec(
                {"name": "work", "image": TEST_IMAGE, "command": ["true"]}, "test"
            ),
            policy=built.policy,
            limits=built.limits,
            caps=built.caps,
        )
        queues.create(session, PROJECT, QueueCreate(name="quiet"), SYSTEM, caps=built.caps)
    yield built
    built.close()


def submit(services: Services, **body: object) -> str:
    with services.db.transaction() as session:
        job = jobs.submit(
            session,
            services.box,
            None,
            PROJECT,
            JobCreate.model_validate({"definition": "work", **body}),
            policy=services.policy,
            limits=services.limits,
        )
    return job.id


def ended_at(services: Services, job_id: str, when: datetime) -> None:
    """Make the job one that ended at ``when`` (as the runner would leave it)."""
    with services.db.transaction() as session:
        session.execute(
            sa.update(Job)
            .where(Job.id == job_id)  # type: ignore[arg-type]
            .values(status="succeeded", finish_time=when)
        )


def rows(services: Services, now: datetime) -> dict[str, list[tuple[datetime, int, int, int]]]:
    with services.db.read() as session:
        found = queue_samples.last_hour(session, PROJECT, now)
    return {
        queue: [(r.minute, r.waiting, r.running, r.ended) for r in samples]
        for queue, samples in found.items()
    }


def sample(services: Services, now: datetime) -> int:
    with services.db.transaction() as session:
        return queue_samples.sample(session, now)


def test_a_row_per_queue_per_minute_with_depth_and_ended_jobs(services: Services) -> None:
    waiting = [submit(services) for _ in range(3)]
    early, late = submit(services), submit(services)
    ended_at(services, early, NOON + timedelta(seconds=10))
    # An array's children count, its parent does not.
    parent = submit(services, array={"size": 2})
    with services.db.read() as session:
        children = session.execute(
            sa.select(Job.id).where(Job.parent_id == parent)  # type: ignore[arg-type]
        ).all()
    for (child,) in children:
        ended_at(services, child, NOON + timedelta(seconds=20))
    ended_at(services, parent, NOON + timedelta(seconds=20))

    assert sample(services, NOON + timedelta(seconds=30)) == 2
    # 3 waiting, the late one too (it ends after this sample).
    assert rows(services, NOON + timedelta(seconds=30)) == {
        "default": [(NOON, 4, 0, 3)],
        "quiet": [(NOON, 0, 0, 0)],
    }
    ended_at(services, late, NOON + timedelta(seconds=50))
    ended_at(services, waiting[0], NOON + timedelta(seconds=70))
    sample(services, NOON + timedelta(seconds=80))
    minute = NOON + timedelta(minutes=1)
    assert rows(services, minute + timedelta(seconds=20))["default"] == [
        # The late end counted in its minute by the next pass.
        (NOON, 4, 0, 4),
        (minute, 2, 0, 1),
    ]
    # Shown for an hour; deleted after two.
    assert rows(services, NOON + timedelta(minutes=60)) == {
        "default": [(minute, 2, 0, 1)],
        "quiet": [(minute, 0, 0, 0)],
    }
    sample(services, NOON + timedelta(hours=2, minutes=1))
    with services.db.read() as session:
        minutes = session.execute(sa.text("SELECT DISTINCT minute FROM queue_samples")).all()
    assert len(minutes) == 2  # 12:01 (not yet two hours old) and 14:01
