"""Retention on a real database (SQLite and PostgreSQL), no runner: finished jobs past their
project's retention go with their events, logs and webhook deliveries, in batches; unfinished
work stays whatever its age; schedule runs and audit entries have their own cut-offs; a dry run
counts exactly what a collection then deletes; one finished job can be deleted at once.

Jobs are made finished by cancelling them while they wait (a real terminal transition, with
its event and webhook message); their age comes from the ``now`` collection is given.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col, func, select
from typer.testing import CliRunner

from orchestrator.background.retention import Collector
from orchestrator.cli import app as cli_app
from orchestrator.config import Settings
from orchestrator.errors import Conflict, NotFound
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.rules.runner_states import RunnerState
from orchestrator.rules.schedule_states import ScheduleRunStatus
from orchestrator.rules.states import JobStatus
from orchestrator.rules.worker_states import WorkerState
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import attempts, audit, definitions, jobs, projects, retention
from orchestrator.services.audit import SYSTEM
from orchestrator.services.retention import Removed, Retention
from orchestrator.storage.models import (
    AuditEvent,
    Job,
    JobEvent,
    JobLog,
    RunnerRecord,
    Schedule,
    ScheduleRun,
    WebhookDelivery,
    WorkerContainer,
    utcnow,
)
from tests.conftest import TEST_IMAGE

DAY = 86400.0
KEEP = Retention(jobs=30 * DAY, audit=365 * DAY)


@dataclass
class World:
    services: Services

    def submit(self, project: str = "default", *, finished: bool = True) -> str:
        """A job of ``project`` with a webhook and two log rows; cancelled unless not
        ``finished``."""
        services = self.services
        request = JobCreate.model_validate(
            {"definition": "noop", "webhook": "http://127.0.0.1:9/hook"}
        )
        with services.db.transaction() as session:
            job = jobs.submit(
                session,
                services.box,
                None,
                project,
                request,
                policy=services.policy,
                limits=services.limits,
            )
            now = utcnow()
            attempts.append_logs(session, None, job.id, 1, [(now, "one\n"), (now, "two\n")])
        if finished:
            with services.db.transaction() as session:
                jobs.cancel(session, None, project, job.id)
        return job.id

    def collect(self, days: float, keep: Retention = KEEP, limit: int = 500) -> Removed:
        """One batch, as if ``days`` had passed."""
        with self.services.db.transaction() as session:
            return retention.collect(session, keep, utcnow() + timedelta(days=days), limit)

    def count(self, table: type, *where: sa.ColumnElement[bool]) -> int:
        with self.services.db.read() as session:
            return int(session.exec(select(func.count()).select_from(table).where(*where)).one())

    def rows_of(self, job_id: str) -> dict[str, int]:
        return {
            "jobs": self.count(Job, col(Job.id) == job_id),
            "events": self.count(JobEvent, col(JobEvent.job_id) == job_id),
            "logs": self.count(JobLog, col(JobLog.job_id) == job_id),
            "deliveries": self.count(WebhookDelivery, col(WebhookDelivery.job_id) == job_id),
        }


def register_noop(services: Services, project: str) -> None:
    with services.db.transaction() as session:
        definitions.register(
            session,
            project,
            definition_spec.validate_spec(
                {"name": "noop", "image": TEST_IMAGE, "command": ["true"]}, "test"
            ),
            policy=services.policy,
            limits=services.limits,
            caps=services.caps,
        )


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Iterator[World]:
    services = Services.build(make_settings(runner_enabled=False))
    with services.db.transaction() as session:
        for name in ("alpha", "beta"):
            projects.create(session, name)
    for name in ("default", "alpha", "beta"):
        register_noop(services, name)
    yield World(services)
    services.close()


def test_a_finished_job_past_retention_goes_with_everything_that_hangs_off_it(
    world: World,
) -> None:
    old = world.submit()
    waiting = world.submit(finished=False)
    assert world.rows_of(old) == {"jobs": 1, "events": 3, "logs": 2, "deliveries": 1}
    # Not yet 30 days: nothing goes.
    assert world.collect(days=29).total == 0
    removed = world.collect(days=31)
    assert (removed.jobs, removed.events, removed.logs, removed.deliveries) == (1, 3, 2, 1)
    assert removed.more is False
    assert world.rows_of(old) == {"jobs": 0, "events": 0, "logs": 0, "deliveries": 0}
    # A job that still waits is never collected, however old.
    assert world.collect(days=3000).jobs == 0
    assert world.rows_of(waiting)["jobs"] == 1


def test_a_projects_own_retention_wins_and_zero_keeps_everything(world: World) -> None:
    kept, short, default = world.submit("alpha"), world.submit("beta"), world.submit()
    with world.services.db.transaction() as session:
        projects.update(session, "alpha", {"retention": 0.0}, SYSTEM)
        projects.update(session, "beta", {"retention": 3600.0}, SYSTEM)
    removed = world.collect(days=1)
    assert removed.jobs == 1
    assert world.rows_of(short)["jobs"] == 0
    assert world.rows_of(default)["jobs"] == 1
    world.collect(days=3000)
    assert world.rows_of(kept)["jobs"] == 1
    assert world.rows_of(default)["jobs"] == 0
    # The server's 0 keeps every project that has no retention of its own.
    forever = world.submit()
    assert world.collect(days=3000, keep=Retention(jobs=0, audit=0)).total == 0
    assert world.rows_of(forever)["jobs"] == 1


def test_a_backlog_goes_in_batches_each_saying_whether_more_is_left(world: World) -> None:
    made = [world.submit() for _ in range(7)]
    batches = []
    while True:
        removed = world.collect(days=31, limit=3)
        batches.append(removed.jobs)
        if not removed.more:
            break
    # 3 + 3 + 1; a batch that came out exactly full says more, and the next finds none.
    assert batches == [3, 3, 1]
    assert all(world.rows_of(job)["jobs"] == 0 for job in made)


def test_a_dry_run_counts_what_a_collection_then_deletes(world: World) -> None:
    for project in ("default", "alpha", "default"):
        world.submit(project)
    world.submit(finished=False)
    later = utcnow() + timedelta(days=31)
    with world.services.db.read() as session:
        counted = retention.expired(session, KEEP, later)
    assert world.count(Job) == 4
    with world.services.db.transaction() as session:
        removed = retention.collect(session, KEEP, later, 500)
    assert (counted.jobs, counted.events, counted.logs, counted.deliveries) == (3, 9, 6, 3)
    assert (removed.jobs, removed.events, removed.logs, removed.deliveries) == (3, 9, 6, 3)
    assert counted.schedule_runs == removed.schedule_runs
    assert counted.audit_events == removed.audit_events


def test_finished_schedule_runs_and_old_audit_entries_go_but_a_sending_run_stays(
    world: World,
) -> None:
    now = utcnow()
    with world.services.db.transaction() as session:
        schedule = Schedule(
            id="s1",
            project="beta",
            name="ping",
            cron="* * * * *",
            timezone="UTC",
            target_kind="http",
            target={"url": "http://127.0.0.1:9/"},
            create_time=now,
            update_time=now,
        )
        session.add(schedule)
        session.flush()
        statuses = [ScheduleRunStatus.SUCCEEDED, ScheduleRunStatus.FAILED]
        statuses += [ScheduleRunStatus.PENDING, ScheduleRunStatus.RUNNING]
        for minute, status in enumerate(statuses):
            session.add(
                ScheduleRun(
                    schedule_id="s1",
                    tick=now + timedelta(minutes=minute),
                    trigger="cron",
                    status=status,
                    fire_time=now,
                )
            )
        audit.record(session, SYSTEM, "queue_created", "queue/x", "beta")
    removed = world.collect(days=31)
    assert removed.schedule_runs == 2
    assert world.count(ScheduleRun) == 2
    assert world.count(AuditEvent, col(AuditEvent.action) == "queue_created") == 1
    world.collect(days=366)
    assert world.count(AuditEvent, col(AuditEvent.action) == "queue_created") == 0


def test_one_finished_job_is_deleted_at_once_and_an_unfinished_one_is_refused(
    world: World,
) -> None:
    done, waiting = world.submit("alpha"), world.submit("alpha", finished=False)
    with world.services.db.transaction() as session, pytest.raises(Conflict) as refused:
        retention.delete_job(session, "alpha", waiting, SYSTEM)
    assert "cancel it first" in refused.value.message
    with world.services.db.transaction() as session, pytest.raises(NotFound):
        retention.delete_job(session, "beta", done, SYSTEM)
    with world.services.db.transaction() as session:
        removed = retention.delete_job(session, "alpha", done, SYSTEM)
    assert removed.jobs == 1
    assert world.rows_of(done) == {"jobs": 0, "events": 0, "logs": 0, "deliveries": 0}
    assert world.rows_of(waiting)["jobs"] == 1
    assert world.count(AuditEvent, col(AuditEvent.action) == "job_deleted") == 1


def test_orchestrator_gc_counts_with_dry_run_then_deletes(world: World) -> None:
    done = [world.submit(), world.submit("beta")]
    waiting = world.submit(finished=False)
    settings = world.services.settings
    env = {
        "ORCH_DATA_DIR": str(settings.data_dir),
        "ORCH_DATABASE_URL": settings.resolved_database_url(),
        # Anything finished a millisecond ago is past it.
        "ORCH_RETENTION": "1ms",
    }

    def gc(*args: str) -> str:
        result = CliRunner().invoke(cli_app, ["gc", *args], env=env, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    would = gc("--dry-run")
    assert would.startswith("would delete 2 finished jobs (6 events, 4 log batches, 2 webhook")
    assert all(world.rows_of(job)["jobs"] == 1 for job in done)
    assert gc().startswith("deleted 2 finished jobs (6 events, 4 log batches, 2 webhook")
    assert all(world.rows_of(job) == dict.fromkeys(world.rows_of(job), 0) for job in done)
    assert world.rows_of(waiting)["jobs"] == 1
    assert gc().startswith("deleted 0 finished jobs")


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_new_sqlite_database_gives_the_pages_retention_freed_back(world: World) -> None:
    """PostgreSQL's autovacuum does this there; a SQLite database made by this release uses
    incremental vacuum, so a collection shrinks it instead of leaving free pages."""
    db = world.services.db

    def pragma(name: str) -> int:
        with db.read() as session:
            return int(session.connection().exec_driver_sql(f"PRAGMA {name}").scalar() or 0)

    assert pragma("auto_vacuum") == 2  # incremental
    for _ in range(40):
        job_id = world.submit()
        with db.transaction() as session:
            attempts.append_logs(session, None, job_id, 1, [(utcnow(), "x" * 20_000)] * 5)
    full = pragma("page_count")
    world.collect(days=31)
    freed = pragma("freelist_count")
    assert freed > 0.5 * full
    assert db.release_free_pages(limit=100) == 100
    assert pragma("freelist_count") == freed - 100
    while db.release_free_pages():
        pass
    assert pragma("freelist_count") == 0
    assert pragma("page_count") <= full - freed


def collection(world: World, *, days: float = 31, max_batch: int = 500) -> retention.Collection:
    """The collector's batches (``Collection``), as if ``days`` had passed."""
    return retention.Collection(
        world.services.db,
        KEEP,
        lambda: utcnow() + timedelta(days=days),
        max_batch=max_batch,
        batch_time=0.01,
    )


def test_batches_never_exceed_the_largest_and_go_on_until_nothing_is_left(world: World) -> None:
    done = [world.submit() for _ in range(5)]
    batches = collection(world, max_batch=2)
    first = batches.batch()
    assert (first.jobs, first.more) == (2, True)
    rest = batches.until_done()
    assert (rest.jobs, rest.events, rest.logs, rest.more) == (3, 9, 6, False)
    assert all(world.rows_of(job) == dict.fromkeys(world.rows_of(job), 0) for job in done)


def orphans(world: World) -> dict[str, int]:
    """Rows of each kind whose job is gone."""
    jobs = select(Job.id)
    return {
        table.__tablename__: world.count(table, col(table.job_id).not_in(jobs))
        for table in (JobEvent, JobLog, WebhookDelivery)
    }


def test_a_batch_that_fails_half_way_deletes_nothing(world: World) -> None:
    """A batch is one transaction: when the database refuses its last statement (the jobs'
    own rows; here a trigger stands for a crash or a lost connection), the events, logs and
    deliveries it had already deleted come back, and no row outlives its job."""
    done = [world.submit() for _ in range(3)]
    db = world.services.db
    refuse = {
        "sqlite": [
            f"CREATE TRIGGER refuse BEFORE DELETE ON jobs WHEN old.id = '{done[-1]}' "
            "BEGIN SELECT RAISE(ABORT, 'refused'); END"
        ],
        "postgresql": [
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'refused'; END $$",
            f"CREATE TRIGGER refuse BEFORE DELETE ON jobs FOR EACH ROW "
            f"WHEN (old.id = '{done[-1]}') EXECUTE FUNCTION refuse()",
        ],
    }[db.dialect]
    with db.transaction() as session:
        for statement in refuse:
            session.connection().exec_driver_sql(statement)
    with pytest.raises(sa.exc.DBAPIError, match="refused"):
        collection(world).batch()
    assert all(
        world.rows_of(job) == {"jobs": 1, "events": 3, "logs": 2, "deliveries": 1} for job in done
    )
    with db.transaction() as session:
        session.connection().exec_driver_sql(
            "DROP TRIGGER refuse" + (" ON jobs" if db.is_postgres else "")
        )
    assert collection(world).until_done().jobs == 3
    assert orphans(world) == {"job_events": 0, "job_logs": 0, "webhook_deliveries": 0}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sqlite_file_stops_growing_when_jobs_come_and_go(world: World) -> None:
    """The soak in one process, without time (bench/retention_soak.py times it): rounds of
    jobs that finish and expire; after each round's collection the file has the pages of the
    first round's at most, so nothing piles up from one round to the next."""
    db = world.services.db

    def pages() -> int:
        with db.read() as session:
            return int(session.connection().exec_driver_sql("PRAGMA page_count").scalar() or 0)

    after: list[int] = []
    for _ in range(4):
        for _ in range(30):
            job_id = world.submit()
            with db.transaction() as session:
                attempts.append_logs(session, None, job_id, 1, [(utcnow(), "x" * 10_000)] * 3)
        assert collection(world).until_done().jobs == 30
        after.append(pages())
    assert max(after[1:]) <= after[0], after
    assert orphans(world) == {"job_events": 0, "job_logs": 0, "webhook_deliveries": 0}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_collector_gives_free_pages_back_once_the_backlog_is_gone(world: World) -> None:
    """During a backlog the freed pages stay free (new rows would reuse them); once it is gone,
    each batch gives back ``RELEASE_PAGES`` and says there is more until fewer are left."""
    db = world.services.db

    def pragma(name: str) -> int:
        with db.read() as session:
            return int(session.connection().exec_driver_sql(f"PRAGMA {name}").scalar() or 0)

    for _ in range(20):
        job_id = world.submit()
        with db.transaction() as session:
            attempts.append_logs(session, None, job_id, 1, [(utcnow(), "x" * 50_000)] * 4)
    full = pragma("page_count")
    batches = collection(world, max_batch=10)
    first = batches.batch()
    assert (first.jobs, first.more) == (10, True)
    assert pragma("freelist_count") > 0
    assert pragma("page_count") == full
    steps = [batches.batch()]
    while steps[-1].more:
        steps.append(batches.batch())
    assert sum(step.jobs for step in steps) == 10
    assert len(steps) > 2  # a full release at least, then the last, smaller one
    assert pragma("freelist_count") < retention.RELEASE_PAGES
    assert pragma("page_count") < full - retention.RELEASE_PAGES


def test_the_collector_logs_a_backlog_as_a_summary_not_a_line_per_batch(
    world: World, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Six batches of one job: one line when the first goes (the backlog has begun), one when
    the last does; together they count every job."""
    for _ in range(6):
        world.submit()
    settings = make_settings(runner_enabled=False, gc_batch=1)
    services = world.services
    collector = Collector(
        settings, services.db, services.hub, clock=lambda: utcnow() + timedelta(days=31)
    )
    caplog.set_level(logging.INFO, logger="orchestrator.background.retention")
    batches = [collector.collect_batch()]
    while batches[-1].more:
        batches.append(collector.collect_batch())
    assert sum(batch.jobs for batch in batches) == 6
    lines = [r for r in caplog.records if getattr(r, "action", None) == "retention_collected"]
    assert [line.getMessage() for line in lines] == [
        "retention: deleted 1 finished jobs (3 events, 2 log batches, 1 webhook deliveries), "
        "0 schedule runs, 0 audit entries, 0 idempotency keys and 0 runners long gone; more to go",
        "retention: deleted 5 finished jobs (15 events, 10 log batches, 5 webhook deliveries), "
        "0 schedule runs, 0 audit entries, 0 idempotency keys and 0 runners long gone",
    ]


def test_runners_silent_past_retention_that_run_nothing_go(world: World) -> None:
    now = utcnow()
    silent = now - timedelta(days=40)

    def runner(name: str, heard: datetime, state: RunnerState) -> RunnerRecord:
        return RunnerRecord(
            name=name,
            session=uuid.uuid4().hex,
            hostname="gone",
            pid=1,
            docker_host="unix:///var/run/docker.sock",
            capacity=1,
            state=state,
            version="0",
            heartbeat_time=heard,
        )

    running_job = world.submit(finished=False)
    with world.services.db.transaction() as session:
        for record in (
            runner("lost", silent, RunnerState.ACTIVE),
            runner("stopped", silent, RunnerState.STOPPED),
            runner("busy", silent, RunnerState.ACTIVE),  # still holds a running job
            runner("keeper", silent, RunnerState.ACTIVE),  # a worker container is recorded
            runner("recent", now - timedelta(hours=2), RunnerState.STOPPED),
        ):
            session.add(record)
        session.add(
            WorkerContainer(
                container_id=uuid.uuid4().hex,
                runner="keeper",
                session="s",
                project="default",
                queue="default",
                definition="noop",
                definition_version=1,
                state=WorkerState.RUNNING,
            )
        )
        session.execute(
            sa.update(Job)
            .where(col(Job.id) == running_job)
            .values(status=JobStatus.RUNNING, runner="busy")
        )

    def names() -> list[str]:
        with world.services.db.read() as session:
            return sorted(session.exec(select(RunnerRecord.name)).all())

    # An hour's retention still waits a day: "recent" (two hours silent) stays.
    short = Retention(jobs=3600.0, audit=365 * DAY)
    with world.services.db.read() as session:
        assert retention.expired(session, short, utcnow()).runners == 2
    assert world.collect(0, short).runners == 2
    assert names() == ["busy", "keeper", "recent"]
    # Retention 0 keeps everything, runners too.
    assert world.collect(400, Retention(jobs=0, audit=365 * DAY)).runners == 0
    assert names() == ["busy", "keeper", "recent"]
