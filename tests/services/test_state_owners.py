"""Each state column has one writer, which refuses a move its table forbids and leaves the
stored row as it was; a stored state reads back as its enum member.

No server and no runner; every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlmodel import select

from orchestrator.config import Settings
from orchestrator.errors import Conflict
from orchestrator.process import Services
from orchestrator.rules.delivery_states import DeliveryStatus
from orchestrator.rules.runner_states import RunnerState
from orchestrator.rules.schedule_states import ScheduleRunStatus, ScheduleStatus
from orchestrator.schemas.schedules import ScheduleCreate
from orchestrator.services import runners, schedules, webhooks
from orchestrator.services.audit import SYSTEM
from orchestrator.services.schedules import Checks
from orchestrator.storage.models import Schedule, ScheduleRun, WebhookDelivery, utcnow


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    yield built
    built.close()


def _schedule(services: Services) -> Schedule:
    checks = Checks(box=services.box, policy=services.policy, limits=services.limits)
    request = ScheduleCreate.model_validate(
        {"name": "ping", "cron": "0 9 * * *", "target": {"http": {"url": "http://127.0.0.1:9/"}}}
    )
    with services.db.transaction() as session:
        return schedules.create(
            session, None, "default", request, SYSTEM, checks, caps=services.caps
        )


def test_a_schedule_status_outside_the_vocabulary_is_refused(services: Services) -> None:
    schedule = _schedule(services)
    with services.db.transaction() as session:
        row = schedules.get(session, "default", "ping", lock=True)
        assert row.status is ScheduleStatus.ACTIVE  # read back as the member
        with pytest.raises(Conflict, match="cannot go from active to done"):
            schedules.set_status(session, row, "done")  # type: ignore[arg-type]
        assert row.status is ScheduleStatus.ACTIVE
        schedules.set_status(session, row, ScheduleStatus.PAUSED)
    with services.db.read() as session:
        assert session.get(Schedule, schedule.id).status is ScheduleStatus.PAUSED  # type: ignore[union-attr]


def test_a_replaced_run_is_never_claimed_again(services: Services) -> None:
    schedule = _schedule(services)
    now = utcnow()
    with services.db.transaction() as session:
        run = ScheduleRun(
            schedule_id=schedule.id,
            tick=now,
            trigger="manual",
            fire_time=now,
            status=ScheduleRunStatus.REPLACED,
            finish_time=now,
        )
        session.add(run)
    with services.db.transaction() as session:
        stored = session.exec(select(ScheduleRun)).one()
        assert stored.status is ScheduleRunStatus.REPLACED
        with pytest.raises(Conflict, match="cannot go from 'replaced' to 'running'"):
            schedules.set_run_status(session, stored, ScheduleRunStatus.RUNNING)
        assert stored.status is ScheduleRunStatus.REPLACED


def test_a_delivered_webhook_does_not_go_back_to_pending(services: Services) -> None:
    now = utcnow()
    with services.db.transaction() as session:
        session.add(
            WebhookDelivery(
                job_id="job-1",
                number=1,
                project="default",
                message_id="msg_1",
                event_type="job.succeeded",
                url="http://127.0.0.1:9/",
                body="{}",
                status=DeliveryStatus.DELIVERED,
                create_time=now,
                delivered_time=now,
            )
        )
    with services.db.transaction() as session:
        delivery = session.exec(select(WebhookDelivery)).one()
        assert delivery.status is DeliveryStatus.DELIVERED
        with pytest.raises(Conflict, match="cannot go from delivered to pending"):
            webhooks.set_delivery_status(session, delivery, DeliveryStatus.PENDING)
        assert delivery.status is DeliveryStatus.DELIVERED
        webhooks.set_delivery_status(session, delivery, DeliveryStatus.DELIVERED)  # staying put


def test_a_stopped_runner_does_not_record_a_drain(services: Services) -> None:
    identity = runners.Identity(
        name="owner-test",
        session="session-1",
        docker_host="test",
        capacity=1,
        queues=None,
        version="test",
    )
    with services.db.transaction() as session:
        runners.register(session, identity, lease=30.0)
    with services.db.transaction() as session:
        runners.set_state(session, identity, RunnerState.STOPPED)
    with pytest.raises(Conflict, match="cannot go from stopped to draining"):
        with services.db.transaction() as session:
            runners.set_state(session, identity, RunnerState.DRAINING)
    with services.db.read() as session:
        view = runners.get(session, "owner-test", lease=30.0)
    assert view.state is RunnerState.STOPPED
    assert view.record.state is RunnerState.STOPPED
    # A new run of the process registers under the name again.
    with services.db.transaction() as session:
        runners.register(session, identity, lease=30.0)
    with services.db.read() as session:
        assert runners.get(session, "owner-test", lease=30.0).state is RunnerState.ACTIVE
