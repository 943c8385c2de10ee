"""What the console reads and writes beyond the API's routes, on SQLite and PostgreSQL: a log's
tail read backwards a page at a time ("load earlier"), a follow that starts after the tail the
page already shows, and a resubmit that makes a new job of the same spec, secret env and
retry policy included."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import aclosing

import pytest

from orchestrator.config import Settings
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import (
    attempts,
    definitions,
    dependencies,
    job_queries,
    jobs,
    resubmit,
)
from orchestrator.services.audit import SYSTEM
from orchestrator.storage.models import utcnow
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
                {"name": "echo", "image": TEST_IMAGE, "command": ["echo", "Param::word"]}, "test"
            ),
            policy=built.policy,
            limits=built.limits,
            caps=built.caps,
        )
    yield built
    built.close()


def submit(services: Services, **body: object) -> str:
    with services.db.transaction() as session:
        job = jobs.submit(
            session,
            services.box,
            None,
            PROJECT,
            JobCreate.model_validate({"definition": "echo", **body}),
            policy=services.policy,
            limits=services.limits,
        )
    return job.id


def test_a_logs_tail_pages_backwards_to_its_start(services: Services) -> None:
    job_id = submit(services, parameters={"word": "hi"})
    with services.db.transaction() as session:
        attempts.append_logs(
            session, None, job_id, 1, [(utcnow(), f"line {i}\n") for i in range(25)]
        )
    seen: list[str] = []
    before = None
    with services.db.read() as session:
        while page := job_queries.log_tail(session, job_id, before=before, limit=10):
            seen = [row.text for row in page] + seen
            before = page[0].id
    assert seen == [f"line {i}\n" for i in range(25)]
    with services.db.read() as session:
        assert [row.text for row in job_queries.log_tail(session, job_id, limit=3)] == [
            "line 22\n",
            "line 23\n",
            "line 24\n",
        ]


def test_a_follow_starts_after_the_chunk_the_page_shows(services: Services) -> None:
    job_id = submit(services, parameters={"word": "hi"})
    with services.db.transaction() as session:
        attempts.append_logs(session, None, job_id, 1, [(utcnow(), f"{i}\n") for i in range(5)])
    with services.db.read() as session:
        shown = job_queries.log_tail(session, job_id, limit=2)
    with services.db.transaction() as session:
        jobs.cancel(session, None, PROJECT, job_id)  # ended: the follow stops after the rows

    # The page shows lines 3 and 4: a follow from the last shown has nothing more (the job has
    # ended), one from the first shown gets the line after it.
    assert asyncio.run(_follow_from(services, job_id, shown[-1].id or 0)) == b""
    assert asyncio.run(_follow_from(services, job_id, shown[0].id or 0)) == b"4\n"


async def _follow_from(services: Services, job_id: str, after: int) -> bytes:
    lease = services.streams.open(stream_reader(services, PROJECT), PROJECT)
    received = b""
    try:
        async with aclosing(services.streams.logs(PROJECT, job_id, None, lease, after=after)) as b:
            async for items in b:
                received += b"".join(item.data for item in items)
    finally:
        services.streams.close(lease)
    return received


def test_a_resubmit_is_a_new_job_of_the_same_spec_with_its_secret_env(
    services: Services,
) -> None:
    first = submit(
        services,
        parameters={"word": "again"},
        env={"MODE": "x"},
        secret_env={"API_KEY": "secret-value-1"},
        input={"n": 1},
        priority=3,
        timeout="90s",
        retry={"attempts": 4, "on": [{"exit_codes": [7], "action": "fail"}]},
    )
    with services.db.transaction() as session:
        second = resubmit.resubmit(
            session,
            services.box,
            None,
            PROJECT,
            first,
            policy=services.policy,
            limits=services.limits,
            tes_storage=services.settings.tes_storage(),
            actor=SYSTEM,
        )
        second_id = second.id
    with services.db.read() as session:
        old = job_queries.get(session, PROJECT, first)
        new = job_queries.get(session, PROJECT, second_id)
        assert new.id != old.id and new.status is JobStatus.QUEUED
        for field in ("definition_name", "definition_version", "queue", "command", "parameters"):
            assert getattr(new, field) == getattr(old, field), field
        assert (new.env, new.input, new.priority, new.timeout) == ({"MODE": "x"}, {"n": 1}, 3, 90)
        # The job's own retry policy, not the definition's one attempt.
        assert (new.max_attempts, new.container["retry"]) == (4, old.container["retry"])
        assert old.container["retry"]["on"] == [{"exit_codes": [7], "action": "fail"}]
        assert attempts.secret_values(new, services.box) == {"API_KEY": "secret-value-1"}


def test_a_jobs_dependents_are_named_first_by_id_and_counted_whole(services: Services) -> None:
    root = submit(services, parameters={"word": "root"})
    dependents = sorted(
        submit(services, parameters={"word": str(i)}, depends_on=[{"job": root}]) for i in range(3)
    )
    with services.db.read() as session:
        assert dependencies.dependents(session, root, 2) == [
            (dependents[0], JobStatus.PENDING),
            (dependents[1], JobStatus.PENDING),
        ]
        assert dependencies.shown(session, root)[1] == 3
        assert dependencies.dependents(session, dependents[0], 2) == []
