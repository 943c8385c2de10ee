"""Array jobs on a real database (SQLite and PostgreSQL), no runner: the parent and its children
made in one submit, children claimed and finished as the runner's side does, and the parent's
derived status, counter, cancel, queue counts and retention.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, func, select

from orchestrator.config import Settings
from orchestrator.errors import Conflict, LimitExceeded
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import (
    attempts,
    definitions,
    job_queries,
    jobs,
    queues,
    retention,
)
from orchestrator.services.attempts import AttemptResult
from orchestrator.services.audit import SYSTEM
from orchestrator.services.retention import Retention
from orchestrator.storage.models import Job, JobEvent, WebhookDelivery, utcnow
from tests.conftest import TEST_IMAGE

RUNNER = "array-test-runner"


@dataclass
class World:
    services: Services

    def submit(self, **body: Any) -> Job:
        request = JobCreate.model_validate({"definition": "shard", **body})
        with self.services.db.transaction() as session:
            return jobs.submit(
                session,
                self.services.box,
                None,
                "default",
                request,
                policy=self.services.policy,
                limits=self.services.limits,
            )

    def job(self, job_id: str) -> Job:
        with self.services.db.read() as session:
            return job_queries.get(session, "default", job_id)

    def children(self, parent_id: str) -> list[Job]:
        with self.services.db.read() as session:
            statement = select(Job).where(Job.parent_id == parent_id).order_by(col(Job.seq))
            return list(session.exec(statement).all())

    def claim(self) -> Job | None:
        with self.services.db.transaction() as session:
            return attempts.claim(session, RUNNER)

    def run(self, job: Job, exit_code: int) -> None:
        """Start the claimed ``job`` and end its attempt with ``exit_code``."""
        with self.services.db.transaction() as session:
            assert attempts.mark_running(session, None, job.id, RUNNER, job.attempt, "c" * 64)
        with self.services.db.transaction() as session:
            attempts.finish(session, None, job.id, RUNNER, job.attempt, AttemptResult(exit_code))

    def cancel(self, job_id: str) -> Job:
        with self.services.db.transaction() as session:
            return jobs.cancel(session, None, "default", job_id)

    def count(self, model: type, *where: Any) -> int:
        with self.services.db.read() as session:
            return int(session.exec(select(func.count()).select_from(model).where(*where)).one())


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Iterator[World]:
    services = Services.build(make_settings(runner_enabled=False, array_max_size=300))
    spec = {
        "name": "shard",
        "image": TEST_IMAGE,
        "command": ["echo", "Param::array_index", "of", "Ref::array_size", "Param::word"],
        "parameters": {"word": "hello"},
    }
    with services.db.transaction() as session:
        definitions.register(
            session,
            "default",
            definition_spec.validate_spec(spec, "test"),
            policy=services.policy,
            limits=services.limits,
            caps=services.caps,
        )
    yield World(services)
    services.close()


def test_one_submit_makes_a_parent_and_its_indexed_children(world: World) -> None:
    parent = world.submit(array={"size": 3}, name="fan", webhook="http://127.0.0.1:9/hook")
    assert (parent.array_size, parent.unfinished_children, parent.parent_id) == (3, 3, None)
    assert parent.status is JobStatus.QUEUED
    # The parent keeps the array's placeholders; each child has them filled in.
    assert parent.command == ["echo", "Param::array_index", "of", "Param::array_size", "hello"]
    children = world.children(parent.id)
    assert [child.array_index for child in children] == [0, 1, 2]
    assert [child.command for child in children] == [
        ["echo", str(i), "of", "3", "hello"] for i in range(3)
    ]
    for child in children:
        assert (child.status, child.array_size, child.name, child.webhook) == (
            JobStatus.QUEUED,
            3,
            None,
            None,
        )
        assert child.unfinished_children is None
        events = world.count(JobEvent, col(JobEvent.job_id) == child.id)
        assert events == 2
    # The parent is a job of the queue for the job list, not for the queue's counts.
    with world.services.db.read() as session:
        assert queues.counts(session, "default")["default"] == (3, 0)
        counts = job_queries.children_counts(session, parent)
    assert counts is not None and (counts.size, counts.queued) == (3, 3)


@pytest.mark.parametrize("size", [1, 301])
def test_a_size_out_of_range_is_refused_naming_array_size(world: World, size: int) -> None:
    with pytest.raises(LimitExceeded) as caught:
        world.submit(array={"size": size})
    assert caught.value.field == "array.size"
    assert world.count(Job) == 0


def test_the_parent_is_never_claimed_and_follows_its_children(world: World) -> None:
    parent = world.submit(array={"size": 3}, webhook="http://127.0.0.1:9/hook")
    claimed = [world.claim() for _ in range(4)]
    assert claimed[3] is None
    ids = {job.id for job in claimed if job is not None}
    assert ids == {child.id for child in world.children(parent.id)}
    assert world.job(parent.id).status is JobStatus.RUNNING
    first, second, third = (job for job in claimed if job is not None)
    world.run(first, 0)
    world.run(second, 0)
    running = world.job(parent.id)
    assert (running.status, running.unfinished_children) == (JobStatus.RUNNING, 1)
    assert world.count(WebhookDelivery) == 0
    world.run(third, 0)
    done = world.job(parent.id)
    assert (done.status, done.unfinished_children) == (JobStatus.SUCCEEDED, 0)
    # One webhook, the parent's, with its children's counts.
    with world.services.db.read() as session:
        deliveries = session.exec(select(WebhookDelivery)).all()
    assert [d.job_id for d in deliveries] == [parent.id]
    assert '"children":{"size":3' in deliveries[0].body
    assert '"succeeded":3' in deliveries[0].body


def test_one_failed_child_fails_the_parent_once_every_child_ended(world: World) -> None:
    parent = world.submit(array={"size": 2})
    first, second = world.claim(), world.claim()
    assert first is not None and second is not None
    world.run(first, 3)
    assert world.job(parent.id).status is JobStatus.RUNNING
    world.run(second, 0)
    failed = world.job(parent.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "1 of 2 children failed and 0 were cancelled"


def test_cancelling_one_child_cancels_only_it_and_the_parent_fails(world: World) -> None:
    parent = world.submit(array={"size": 2})
    children = world.children(parent.id)
    world.cancel(children[0].id)
    assert world.job(children[1].id).status is JobStatus.QUEUED
    assert world.job(parent.id).status is JobStatus.QUEUED
    world.cancel(children[1].id)
    # Every child ended without one starting: the parent fails (one was cancelled).
    assert world.job(parent.id).status is JobStatus.FAILED


def test_cancelling_the_parent_cancels_waiting_children_and_asks_running_ones(
    world: World,
) -> None:
    parent = world.submit(array={"size": 3})
    running = world.claim()
    assert running is not None
    shown = world.cancel(parent.id)
    assert shown.status is JobStatus.RUNNING and shown.cancel_requested
    statuses = {child.id: child.status for child in world.children(parent.id)}
    assert sorted(statuses.values()) == [
        JobStatus.CANCELLED,
        JobStatus.CANCELLED,
        JobStatus.STARTING,
    ]
    assert world.job(running.id).cancel_requested
    # The running child ends (the runner stops it): the parent ends cancelled.
    with world.services.db.transaction() as session:
        attempts.finish(
            session, None, running.id, RUNNER, running.attempt, AttemptResult(cancelled=True)
        )
    assert world.job(parent.id).status is JobStatus.CANCELLED
    with pytest.raises(Conflict):
        world.cancel(parent.id)


def test_retention_takes_a_parent_with_its_children_and_never_a_child_alone(
    world: World,
) -> None:
    parent = world.submit(array={"size": 3})
    child = world.children(parent.id)[0]
    world.cancel(child.id)
    keep = Retention(jobs=1.0, audit=365 * 86400.0)
    later = utcnow() + timedelta(days=1)
    with world.services.db.transaction() as session:
        assert retention.collect(session, keep, later, 500).jobs == 0
    with world.services.db.transaction() as session:
        with pytest.raises(Conflict):
            retention.delete_job(session, "default", child.id, SYSTEM)
    world.cancel(parent.id)
    # A dry run counts the whole array, as the collection then deletes it.
    with world.services.db.read() as session:
        counted = retention.expired(session, keep, later)
    with world.services.db.transaction() as session:
        removed = retention.collect(session, keep, later, 500)
    assert (counted.jobs, counted.events) == (removed.jobs, removed.events)
    assert removed.jobs == 4
    assert world.count(Job) == 0
    assert world.count(JobEvent) == 0


def test_cancelling_an_array_costs_the_same_statements_whatever_its_size(world: World) -> None:
    """A cancel ends every waiting child in one transaction: its statements must not grow with
    the array (10,000 children once took 30 s, a query and a flush per child)."""
    small, large = world.submit(array={"size": 20}), world.submit(array={"size": 200})
    statements = [0]

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        # SQLite's driver inserts the events one row at a time (cheap, in process); every
        # other statement counts.
        if not statement.startswith("INSERT INTO job_events"):
            statements[0] += 1

    engine = world.services.db.write_engine
    spent = []
    for parent in (small, large):
        statements[0] = 0
        sa.event.listen(engine, "before_cursor_execute", seen)
        try:
            world.cancel(parent.id)
        finally:
            sa.event.remove(engine, "before_cursor_execute", seen)
        spent.append(statements[0])
        assert world.job(parent.id).status is JobStatus.CANCELLED
        assert {child.status for child in world.children(parent.id)} == {JobStatus.CANCELLED}
    assert spent[1] <= spent[0] + 2, spent
