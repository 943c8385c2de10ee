"""The shared feed of a job's log on a real database (SQLite and PostgreSQL), no runner: log
rows are appended as the runner's pump appends them (``attempts.append_logs``, which wakes the
job's topic after commit). A follower that stops reading is detached once its buffer is full
and catches up from the database; followers joining while rows pour in get every row once."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing

import pytest
import sqlalchemy as sa

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import attempts, definitions, jobs
from orchestrator.services.audit import Actor
from orchestrator.storage.models import utcnow
from orchestrator.streams.feed import BUFFER_ITEMS, Item
from orchestrator.streams.guard import Lease
from tests.conftest import TEST_IMAGE, stream_reader

PROJECT = "default"


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    with built.db.transaction() as session:
        definitions.register(
            session,
            PROJECT,
            definition_spec.validate_spec(
                {"name": "noop", "image": TEST_IMAGE, "command": ["true"]}, "test"
            ),
            policy=built.policy,
            limits=built.limits,
            caps=built.caps,
        )
    yield built
    built.close()


@pytest.fixture
def reader(services: Services) -> Actor:
    return stream_reader(services, PROJECT)


def waiting_job(services: Services) -> str:
    with services.db.transaction() as session:
        job = jobs.submit(
            session,
            services.box,
            None,
            PROJECT,
            JobCreate.model_validate({"definition": "noop"}),
            policy=services.policy,
            limits=services.limits,
        )
    return job.id


def append(services: Services, job_id: str, first: int, count: int) -> None:
    """Log rows ``first`` .. ``first + count - 1`` in one transaction, waking the followers."""
    now = utcnow()
    with services.db.transaction() as session:
        attempts.append_logs(
            session, services.hub, job_id, 1, [(now, f"{n}\n") for n in range(first, first + count)]
        )


def finish(services: Services, job_id: str) -> None:
    with services.db.transaction() as session:
        jobs.cancel(session, services.hub, PROJECT, job_id)


def numbers(batches: list[list[Item]]) -> list[int]:
    return [int(item.data) for batch in batches for item in batch]


async def follow(
    services: Services, reader: Actor, job_id: str, leases: list[Lease] | None = None
) -> AsyncGenerator[list[Item]]:
    """The job's log as ``reader`` follows it, holding a lease as the API's streams do (added
    to ``leases``, if given)."""
    lease = services.streams.open(reader, PROJECT)
    if leases is not None:
        leases.append(lease)
    try:
        async with aclosing(services.streams.logs(PROJECT, job_id, None, lease)) as batches:
            async for items in batches:
                yield items
    finally:
        services.streams.close(lease)


def counting(services: Services) -> tuple[list[int], Callable[[], None]]:
    """Count the process's reads of job_logs; (the count, the function that stops counting)."""
    count = [0]

    def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
        if "FROM job_logs" in statement:
            count[0] += 1

    db = services.db
    engines = {db.write_engine, db.read_engine}
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", seen)

    def stop() -> None:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", seen)

    return count, stop


def test_a_follower_that_stops_reading_catches_up_from_the_database(
    services: Services, reader: Actor
) -> None:
    job_id = waiting_job(services)
    batches, size = 2 * BUFFER_ITEMS // 10, 10
    total = batches * size

    async def run() -> tuple[list[int], list[int], int]:
        fast_got: list[list[Item]] = []
        slow_got: list[list[Item]] = []
        fast_progress = asyncio.Condition()
        go = asyncio.Event()
        leases: list[Lease] = []

        async def fast() -> None:
            async for items in follow(services, reader, job_id, leases):
                fast_got.append(items)
                async with fast_progress:
                    fast_progress.notify_all()

        async def slow() -> None:
            async for items in follow(services, reader, job_id, leases):
                slow_got.append(items)
                await go.wait()  # stops reading after its first batch, until told to go on

        tasks = [asyncio.create_task(fast()), asyncio.create_task(slow())]
        streams = services.streams
        while streams.followers("logs", PROJECT, job_id) < 2:
            await asyncio.sleep(0.01)
        for batch in range(batches):
            await asyncio.to_thread(append, services, job_id, batch * size + 1, size)
            # Each batch a read of its own: the fast follower has it before the next comes.
            appended = (batch + 1) * size
            async with fast_progress:
                await fast_progress.wait_for(lambda n=appended: len(numbers(fast_got)) >= n)
        # The streams' token check (every 2 s, and on a revoke) keeps the followers' leases.
        await streams.guard.check()
        assert len(leases) == 2 and not any(lease.ended for lease in leases)
        feed = streams.feeds.feeds[("logs", PROJECT, job_id)]
        # The slow follower was cut off from the feed; the others are not held back by it.
        assert len(feed.followers) == 2
        assert streams.followers("logs", PROJECT, job_id) == 1
        feed_reads = feed.reads
        go.set()
        while streams.followers("logs", PROJECT, job_id) < 2:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(finish, services, job_id)
        await asyncio.gather(*tasks)
        return numbers(fast_got), numbers(slow_got), feed_reads

    reads, stop = counting(services)
    try:
        # Bounded: a follower that ends early fails the test rather than hanging it.
        fast_numbers, slow_numbers, feed_reads = asyncio.run(asyncio.wait_for(run(), 120))
    finally:
        stop()
    expected = list(range(1, total + 1))
    assert fast_numbers == expected
    assert slow_numbers == expected
    # The feed's reads, the two first catch-ups, the slow follower's catch-up, the feed's last.
    assert feed_reads >= batches
    assert reads[0] >= feed_reads + 3


def test_followers_joining_while_rows_pour_in_get_each_row_once(
    services: Services, reader: Actor
) -> None:
    job_id = waiting_job(services)
    total, size, joiners = 600, 5, 20

    def writer(started: threading.Event) -> None:
        started.set()
        for first in range(1, total + 1, size):
            append(services, job_id, first, size)
        finish(services, job_id)

    async def run() -> list[list[int]]:
        async def read_all() -> list[int]:
            got: list[list[Item]] = []
            async for items in follow(services, reader, job_id):
                got.append(items)
            return numbers(got)

        started = threading.Event()
        thread = threading.Thread(target=writer, args=(started,))
        thread.start()
        tasks = []
        for _ in range(joiners):
            tasks.append(asyncio.create_task(read_all()))
            # Let some rows land between two joins (the writer never waits for the readers).
            await asyncio.sleep(0.02)
        results = await asyncio.gather(*tasks)
        await asyncio.to_thread(thread.join)
        return list(results)

    for result in asyncio.run(asyncio.wait_for(run(), 120)):
        assert result == list(range(1, total + 1))
