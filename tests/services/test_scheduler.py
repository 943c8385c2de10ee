"""The scheduler with a clock the test drives: time zones and DST, overlap, missed ticks after
downtime, one-shots, and exactly-once firing with two schedulers on one database.

No server and no runner: jobs a tick submits stay queued, which is what overlap needs to see.
Every test runs on SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from sqlmodel import col, select

from orchestrator.background import scheduler as scheduler_module
from orchestrator.background.scheduler import Scheduler
from orchestrator.config import Settings
from orchestrator.errors import DatabaseUnavailable, InvalidRequest, NotFound
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.schemas.schedules import ScheduleCreate, ScheduleRunPublic
from orchestrator.services import definitions, schedule_queries, schedules
from orchestrator.services.audit import SYSTEM
from orchestrator.services.schedules import Checks
from orchestrator.storage.db import Database
from orchestrator.storage.models import Job, Schedule, ScheduleRun
from tests.conftest import TEST_IMAGE


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, iso: str) -> None:
        self.now = datetime.fromisoformat(iso).astimezone(UTC)


@dataclass
class World:
    services: Services
    scheduler: Scheduler
    clock: Clock
    checks: Checks

    def create(self, **body: Any) -> Schedule:
        body.setdefault("target", {"job": {"definition": "tick"}})
        with self.services.db.transaction() as session:
            return schedules.create(
                session,
                None,
                "default",
                ScheduleCreate.model_validate(body),
                SYSTEM,
                self.checks,
                caps=self.services.caps,
                now=self.clock(),
            )

    def fire_at(self, iso: str) -> int:
        self.clock.set(iso)
        return self.scheduler.fire_due()

    def walk(self, start: str, end: str, step: timedelta = timedelta(minutes=1)) -> None:
        """Fire at every ``step`` from ``start`` to ``end`` (a scheduler that is always up)."""
        self.clock.set(start)
        stop = datetime.fromisoformat(end).astimezone(UTC)
        while self.clock.now <= stop:
            self.scheduler.fire_due()
            self.clock.now += step

    def runs(self, name: str) -> list[ScheduleRunPublic]:
        """The schedule's runs, oldest first."""
        with self.services.db.read() as session:
            schedule = schedules.get(session, "default", name)
            return schedule_queries.runs(session, schedule, limit=500)[::-1]

    def schedule(self, name: str) -> Schedule:
        with self.services.db.read() as session:
            return schedules.get(session, "default", name)

    def jobs(self) -> list[Job]:
        with self.services.db.read() as session:
            return list(session.exec(select(Job).order_by(col(Job.seq))).all())


def make_world(settings: Settings, start: str) -> tuple[World, Callable[[], None]]:
    services = Services.build(settings)
    with services.db.transaction() as session:
        for name, command in (("tick", ["true"]), ("secretive", ["env"])):
            spec = {"name": name, "image": TEST_IMAGE, "command": command}
            definitions.register(
                session,
                "default",
                definition_spec.validate_spec(spec, "test"),
                policy=services.policy,
                limits=services.limits,
                caps=services.caps,
            )
    clock = Clock(datetime.fromisoformat(start).astimezone(UTC))
    checks = Checks(box=services.box, policy=services.policy, limits=services.limits)
    scheduler = Scheduler(settings, services.db, services.hub, checks, clock=clock)
    return World(services, scheduler, clock, checks), services.close


@pytest.fixture
def world(make_settings: Callable[..., Settings]) -> Iterator[World]:
    made, close = make_world(make_settings(runner_enabled=False), "2026-01-10T07:00:00Z")
    yield made
    close()


def utc(iso: str) -> datetime:
    return datetime.fromisoformat(iso).astimezone(UTC)


def fired_ticks(world: World, name: str) -> list[datetime]:
    return [run.tick for run in world.runs(name) if run.job_id is not None]


# --- time zones -----------------------------------------------------------------------------


def test_a_cron_fires_at_its_local_time_in_a_non_utc_zone(world: World) -> None:
    world.create(name="berlin", cron="0 9 * * *", timezone="Europe/Berlin")
    assert world.schedule("berlin").next_run_at == utc("2026-01-10T08:00:00Z")  # CET, UTC+1

    assert world.fire_at("2026-01-10T07:59:59Z") == 0
    assert world.fire_at("2026-01-10T08:00:00.200Z") == 1
    assert world.fire_at("2026-01-10T08:00:30Z") == 0  # the same tick never fires twice
    (run,) = world.runs("berlin")
    assert (run.tick, run.trigger, run.status) == (utc("2026-01-10T08:00:00Z"), "cron", "queued")
    assert [job.id for job in world.jobs()] == [run.job_id]
    assert world.schedule("berlin").next_run_at == utc("2026-01-11T08:00:00Z")
    # In summer (CEST, UTC+2) the same local time is an hour earlier in UTC.
    world.clock.set("2026-07-01T00:00:00Z")
    with world.services.db.read() as session:
        preview = schedule_queries.preview(
            schedules.get(session, "default", "berlin"), 2, world.clock()
        )
    assert [p.utc for p in preview] == [utc("2026-07-01T07:00:00Z"), utc("2026-07-02T07:00:00Z")]
    assert preview[0].local.isoformat() == "2026-07-01T09:00:00+02:00"


def test_a_local_time_that_occurs_twice_fires_once(world: World) -> None:
    # 2026-11-01 in New York: 01:00-01:59 happens in EDT, then again in EST.
    world.clock.set("2026-10-31T12:00:00Z")
    world.create(name="twice", cron="30 1 * * *", timezone="America/New_York")
    world.create(name="quarterly", cron="*/15 1 * * *", timezone="America/New_York")
    world.walk("2026-11-01T04:00:00Z", "2026-11-01T08:00:00Z")
    assert fired_ticks(world, "twice") == [utc("2026-11-01T05:30:00Z")]  # 01:30 EDT only
    assert fired_ticks(world, "quarterly") == [
        utc("2026-11-01T05:00:00Z"),
        utc("2026-11-01T05:15:00Z"),
        utc("2026-11-01T05:30:00Z"),
        utc("2026-11-01T05:45:00Z"),
    ]
    assert world.schedule("twice").next_run_at == utc("2026-11-02T06:30:00Z")  # EST now


def test_a_local_time_that_does_not_exist_fires_at_the_next_valid_instant(world: World) -> None:
    # 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
    world.clock.set("2026-03-07T12:00:00Z")
    world.create(name="gap", cron="30 2 * * *", timezone="America/New_York")
    world.walk("2026-03-08T06:00:00Z", "2026-03-09T08:00:00Z", step=timedelta(minutes=5))
    assert fired_ticks(world, "gap") == [
        utc("2026-03-08T07:00:00Z"),  # 03:00 EDT, the first instant after the gap
        utc("2026-03-09T06:30:00Z"),  # 02:30 EDT the next day
    ]


# --- overlap --------------------------------------------------------------------------------


def test_overlap_skip_records_a_skipped_run_while_the_previous_job_waits(world: World) -> None:
    world.create(name="skipper", cron="* * * * *", overlap="skip")
    world.walk("2026-01-10T07:01:00Z", "2026-01-10T07:03:00Z")
    runs = world.runs("skipper")
    assert [r.status for r in runs] == ["queued", "skipped", "skipped"]
    assert runs[1].detail["still_going"] == [runs[0].job_id]
    assert len(world.jobs()) == 1
    assert "still going" in (world.schedule("skipper").last_outcome or "")


def test_overlap_replace_cancels_the_previous_job(world: World) -> None:
    world.create(name="replacer", cron="* * * * *", overlap="replace")
    world.walk("2026-01-10T07:01:00Z", "2026-01-10T07:02:00Z")
    first, second = world.runs("replacer")
    assert (first.status, second.status) == ("cancelled", "queued")
    assert second.detail["replaced"] == [first.job_id]
    assert [job.status for job in world.jobs()] == ["cancelled", "queued"]


def test_overlap_allow_runs_alongside(world: World) -> None:
    world.create(name="allower", cron="* * * * *")
    world.walk("2026-01-10T07:01:00Z", "2026-01-10T07:03:00Z")
    assert [r.status for r in world.runs("allower")] == ["queued"] * 3


# --- downtime -------------------------------------------------------------------------------


def test_after_downtime_skip_records_one_missed_entry_and_goes_on(world: World) -> None:
    world.create(name="tenner", cron="*/10 * * * *")
    world.fire_at("2026-01-10T07:10:00Z")
    # Down from 07:15 to 10:05: 17 ticks (07:20 ... 10:00) missed.
    assert world.fire_at("2026-01-10T10:05:00Z") == 1
    runs = world.runs("tenner")
    assert [r.status for r in runs] == ["queued", "missed"]
    missed = runs[1]
    assert missed.detail["count"] == 17
    assert missed.detail["first"] == "2026-01-10T07:20:00+00:00"
    assert missed.detail["last"] == "2026-01-10T10:00:00+00:00"
    assert len(world.jobs()) == 1  # no burst
    assert world.schedule("tenner").next_run_at == utc("2026-01-10T10:10:00Z")
    # It never stops for good: the next tick fires as usual.
    world.fire_at("2026-01-10T10:10:01Z")
    assert [r.status for r in world.runs("tenner")] == ["queued", "missed", "queued"]


def test_after_downtime_run_once_fires_the_latest_tick_inside_the_window(world: World) -> None:
    world.create(name="catcher", cron="*/10 * * * *", on_missed="run_once", missed_window="30m")
    world.fire_at("2026-01-10T10:05:00Z")  # first look, 3 hours after creation at 07:00
    runs = world.runs("catcher")
    assert [(r.status, r.trigger) for r in runs] == [("missed", "cron"), ("queued", "catch_up")]
    assert runs[0].detail["count"] == 17  # 07:10 ... 09:50
    assert runs[1].tick == utc("2026-01-10T10:00:00Z")
    assert len(world.jobs()) == 1


def test_after_downtime_run_once_outside_the_window_is_missed(world: World) -> None:
    world.create(name="late", cron="0 * * * *", on_missed="run_once", missed_window="5m")
    world.fire_at("2026-01-10T09:30:00Z")  # the 09:00 tick is 30 minutes late
    (missed,) = world.runs("late")
    assert (missed.status, missed.detail["count"]) == ("missed", 2)  # 08:00 and 09:00
    assert world.jobs() == []
    assert "missed 2 tick(s)" in (world.schedule("late").last_outcome or "")


def test_a_short_delay_inside_the_grace_is_not_missed(world: World) -> None:
    world.create(name="graced", cron="0 8 * * *")
    world.fire_at("2026-01-10T08:00:45Z")  # 45 s late: a busy machine, a restart
    assert [r.status for r in world.runs("graced")] == ["queued"]


def test_paused_ticks_are_not_missed_and_resume_plans_from_now(world: World) -> None:
    world.create(name="napper", cron="0 * * * *", paused=True)
    assert world.fire_at("2026-01-10T12:30:00Z") == 0
    with world.services.db.transaction() as session:
        schedules.set_paused(session, None, "default", "napper", False, SYSTEM, world.clock())
    assert world.schedule("napper").next_run_at == utc("2026-01-10T13:00:00Z")
    world.fire_at("2026-01-10T13:00:00Z")
    assert [r.status for r in world.runs("napper")] == ["queued"]


# --- one-shots ------------------------------------------------------------------------------


def test_a_one_shot_fires_once_then_completes(world: World) -> None:
    world.create(name="once", run_at="2026-01-10T07:30:00Z")
    world.walk("2026-01-10T07:29:00Z", "2026-01-10T07:33:00Z")
    (run,) = world.runs("once")
    assert (run.trigger, run.tick) == ("run_at", utc("2026-01-10T07:30:00Z"))
    schedule = world.schedule("once")
    assert (schedule.status, schedule.next_run_at) == ("completed", None)


def test_a_one_shot_in_the_past_fires_at_once(world: World) -> None:
    world.create(name="overdue", run_at="2020-01-01T00:00:00Z")
    assert world.fire_at("2026-01-10T07:00:00Z") == 1
    assert [r.status for r in world.runs("overdue")] == ["queued"]


def test_a_one_shot_missed_while_down_fails_saying_so(world: World) -> None:
    world.create(name="gone", run_at="2026-01-10T07:30:00Z")
    world.fire_at("2026-01-10T09:00:00Z")
    assert [r.status for r in world.runs("gone")] == ["missed"]
    schedule = world.schedule("gone")
    assert schedule.status == "failed"
    assert "missed" in (schedule.last_outcome or "")


def test_a_run_at_without_offset_is_a_wall_time_in_the_schedules_zone(world: World) -> None:
    made = world.create(name="berlin-once", run_at="2026-01-10T09:00:00", timezone="Europe/Berlin")
    assert made.run_at == made.next_run_at == utc("2026-01-10T08:00:00Z")
    # 02:30 does not exist in Berlin on 2026-03-29: the end of the gap, 03:00 CEST.
    gap = world.create(name="gap-once", run_at="2026-03-29T02:30:00", timezone="Europe/Berlin")
    assert gap.run_at == utc("2026-03-29T01:00:00Z")
    # With an offset it is an instant, whatever the zone.
    fixed = world.create(name="fixed", run_at="2026-01-10T09:00:00+00:00", timezone="Asia/Tokyo")
    assert fixed.run_at == utc("2026-01-10T09:00:00Z")


def test_cron_wins_over_run_at(world: World) -> None:
    made = world.create(name="both", cron="@hourly", run_at="2026-01-10T07:30:00Z")
    assert (made.cron, made.run_at) == ("@hourly", None)
    assert made.next_run_at == utc("2026-01-10T08:00:00Z")


# --- targets --------------------------------------------------------------------------------


def test_a_job_target_is_checked_when_the_schedule_is_made(world: World) -> None:
    with pytest.raises(NotFound) as missing:
        world.create(name="bad", cron="@daily", target={"job": {"definition": "nope"}})
    assert missing.value.field == "target.job.definition"
    assert "'nope' not found" in missing.value.message
    with pytest.raises(InvalidRequest) as caught:
        world.create(
            name="bad",
            cron="@daily",
            target={"job": {"definition": "tick"}, "http": {"url": "http://127.0.0.1:9/"}},
        )
    assert caught.value.field == "target"


def test_a_job_targets_secret_env_is_stored_encrypted_and_reaches_the_job(world: World) -> None:
    canary = "canary-3b1f7d0c9e"
    world.create(
        name="secretive",
        cron="@hourly",
        target={"job": {"definition": "secretive", "secret_env": {"API_KEY": canary}}},
    )
    with world.services.db.read() as session:
        schedule = schedules.get(session, "default", "secretive")
        shown = schedule_queries.public(session, schedule).model_dump_json()
        stored = session.execute(sa.text("SELECT * FROM schedules")).all()
    assert canary not in shown and '"API_KEY":"***"' in shown
    assert canary not in repr(stored)
    world.fire_at("2026-01-10T08:00:00Z")
    (job,) = world.jobs()
    assert job.secret_env_keys == ["API_KEY"]
    assert world.services.box.decrypt(job.secret_env_ciphertext or "") == {"API_KEY": canary}


def test_a_tick_whose_job_cannot_be_submitted_fails_and_the_schedule_goes_on(
    world: World,
) -> None:
    world.create(
        name="named", cron="* * * * *", target={"job": {"definition": "tick", "name": "only-one"}}
    )
    world.walk("2026-01-10T07:01:00Z", "2026-01-10T07:02:00Z")
    first, second = world.runs("named")
    assert first.status == "queued"
    assert second.status == "failed" and "only-one" in (second.error or "")
    assert world.schedule("named").status == "active"


# --- exactly once ---------------------------------------------------------------------------


def test_two_schedulers_on_one_database_fire_each_tick_once(world: World) -> None:
    other_db = Database(world.services.settings.resolved_database_url())
    other = Scheduler(
        world.services.settings, other_db, world.services.hub, world.checks, clock=world.clock
    )
    for n in range(8):
        world.create(name=f"race-{n}", cron="* * * * *")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def race(scheduler: Scheduler) -> None:
        try:
            barrier.wait()
            scheduler.fire_due()
        except BaseException as exc:
            errors.append(exc)

    try:
        for minute in range(1, 11):
            world.clock.set(f"2026-01-10T07:{minute:02d}:00Z")
            threads = [threading.Thread(target=race, args=(s,)) for s in (world.scheduler, other)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        other_db.dispose()
    assert errors == []
    with world.services.db.read() as session:
        ticks = session.exec(select(ScheduleRun.schedule_id, ScheduleRun.tick)).all()
    assert len(ticks) == 80 == len(set(ticks))
    assert len(world.jobs()) == 80


# --- a tick that cannot be fired --------------------------------------------------------------


def fire_tick_failing_for(name: str, failure: Callable[[Any], None]) -> Callable[..., ScheduleRun]:
    """``fire_tick`` as it is, except for the schedule ``name``, where ``failure`` runs first
    (given the pass's session)."""
    original = scheduler_module.fire_tick

    def fire_tick(session: Any, hub: Any, schedule: Schedule, *args: Any) -> ScheduleRun:
        if schedule.name == name:
            failure(session)
        return original(session, hub, schedule, *args)

    return fire_tick


def test_a_schedule_that_cannot_be_fired_is_set_aside_and_the_others_fire(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(_session: Any) -> None:
        raise RuntimeError("a bug in firing")

    monkeypatch.setattr(scheduler_module, "fire_tick", fire_tick_failing_for("broken", bug))
    world.create(name="broken", cron="* * * * *")
    world.create(name="fine", cron="* * * * *")
    world.fire_at("2026-01-10T07:01:00Z")
    broken = world.schedule("broken")
    assert broken.status == "failed"
    assert broken.last_outcome == "failed: internal error (RuntimeError)"
    assert fired_ticks(world, "fine") == [utc("2026-01-10T07:01:00Z")]


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_database_lost_while_firing_leaves_the_schedule_due(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies under the pass (its backend is terminated): the pass fails with
    the database's error and the schedule is not set aside; the next pass fires it."""

    def lose_the_connection(session: Any) -> None:
        session.execute(sa.text("SELECT pg_terminate_backend(pg_backend_pid())"))

    world.create(name="steady", cron="* * * * *")
    with monkeypatch.context() as patch:
        patch.setattr(
            scheduler_module, "fire_tick", fire_tick_failing_for("steady", lose_the_connection)
        )
        with pytest.raises(DatabaseUnavailable) as raised:
            world.fire_at("2026-01-10T07:01:00Z")
    assert raised.value.outage
    assert world.schedule("steady").status == "active"
    assert world.runs("steady") == []
    world.fire_at("2026-01-10T07:01:30Z")
    assert fired_ticks(world, "steady") == [utc("2026-01-10T07:01:00Z")]
