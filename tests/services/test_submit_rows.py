"""A submission linked to no other job is stored by prebuilt statements, not the ORM (SQLite and
PostgreSQL, no runner): its row, its events, its wake-ups and its answer are what a read of it
shows, and the job handed back goes on like one read from the database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import col, select

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules.states import EventType, JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.queues import QueueCreate
from orchestrator.services import job_queries, jobs, queues
from orchestrator.services.audit import SYSTEM
from orchestrator.storage.models import Job, JobEvent
from orchestrator.wakeups.topics import WORK, job_topic

from .test_retention import register_noop


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    register_noop(built, "default")
    yield built
    built.close()


def submit(services: Services, **body: Any) -> tuple[Job, dict[str, Any]]:
    """Submit as the route does (job and answer in one transaction); the job and the answer."""
    request = JobCreate.model_validate(body)
    with services.db.transaction() as session:
        job = jobs.submit(
            session,
            services.box,
            services.hub,
            "default",
            request,
            policy=services.policy,
            limits=services.limits,
            wait_for_definition=True,
        )
        answer = job_queries.submitted(session, job, request).model_dump(mode="json")
    return job, answer


def stored(services: Services, job_id: str) -> tuple[dict[str, Any], list[JobEvent]]:
    with services.db.read() as session:
        shown = job_queries.public(session, job_queries.get(session, "default", job_id))
        events = session.exec(
            select(JobEvent).where(JobEvent.job_id == job_id).order_by(col(JobEvent.id))
        ).all()
    return shown.model_dump(mode="json"), list(events)


def test_a_queued_job_is_stored_as_read_and_wakes_the_runners(services: Services) -> None:
    work = services.hub.version(WORK)
    job, answer = submit(
        services,
        definition="noop",
        name="nightly",
        priority=3,
        env={"A": "b"},
        secret_env={"TOKEN": "s3cret-value"},
        input={"frames": [1, 2]},
        metadata={"team": "render"},
        webhook="http://user:pass@127.0.0.1:9/hook",
    )
    shown, events = stored(services, job.id)
    assert answer == shown
    assert shown["status"] == "queued" and shown["secret_env"] == {"TOKEN": "***"}
    assert shown["webhook"] == "http://***@127.0.0.1:9/hook"
    assert [(e.type, e.status, e.attempt) for e in events] == [
        (EventType.CREATED, JobStatus.QUEUED, 0),
        (EventType.QUEUED, JobStatus.QUEUED, 0),
    ]
    assert events[0].detail == {
        "definition": "noop:1",
        "queue": "default",
        "actor": SYSTEM.record(),
    }
    assert events[1].detail == {}
    assert events[0].time <= events[1].time
    assert services.hub.version(WORK) == work + 1
    with services.db.read() as session:
        row = session.exec(select(Job).where(Job.id == job.id)).one()
    assert row.seq == job.seq
    assert row.secret_env_ciphertext == job.secret_env_ciphertext
    assert row.webhook_auth_ciphertext == job.webhook_auth_ciphertext
    assert row.secret_env_ciphertext is not None
    assert services.box.decrypt(row.secret_env_ciphertext) == {"TOKEN": "s3cret-value"}


def test_a_job_waiting_for_its_time_or_its_definition_wakes_no_runner(
    services: Services,
) -> None:
    work = services.hub.version(WORK)
    later, answer = submit(services, definition="noop", schedule_at="2999-01-01T00:00:00Z")
    shown, events = stored(services, later.id)
    assert answer == shown and shown["status"] == "scheduled"
    assert [(e.type, e.detail) for e in events][1:] == [
        (EventType.SCHEDULED, {"schedule_at": "2999-01-01T00:00:00+00:00"})
    ]
    with services.db.transaction() as session:
        queues.create(session, "default", QueueCreate(name="bare"), SYSTEM, caps=services.caps)
    unbound, answer = submit(services, queue="bare")
    shown, events = stored(services, unbound.id)
    assert answer == shown and shown["status"] == "scheduled"
    assert [(e.type, e.detail) for e in events] == [
        (EventType.CREATED, {"definition": None, "queue": "bare", "actor": SYSTEM.record()}),
        (EventType.SCHEDULED, {"waiting_for": "a default definition of queue 'bare'"}),
    ]
    assert services.hub.version(WORK) == work
    assert services.hub.version(job_topic(later.id)) == 0


def test_the_job_handed_back_goes_on_as_one_read_from_the_database(services: Services) -> None:
    job, _ = submit(services, definition="noop")
    # Cancelled in a later transaction through the object ``submit`` returned: an update of
    # its row, not a second insert.
    with services.db.transaction() as session:
        jobs.cancel_locked(session, None, job)
    shown, events = stored(services, job.id)
    assert shown["status"] == "cancelled"
    assert [e.type for e in events] == [EventType.CREATED, EventType.QUEUED, EventType.CANCELLED]
    with services.db.read() as session:
        assert len(session.exec(select(Job)).all()) == 1
