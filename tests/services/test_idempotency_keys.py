"""Idempotency keys in the database (SQLite and PostgreSQL), no server: a key kept with its
answer, the same key with another fingerprint, expiry on the clock ``keep`` is given, pruning by
retention, a key rolled back with its create, and fingerprints that survive a key rotation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from sqlmodel import func, select

from orchestrator.config import Settings
from orchestrator.errors import IdempotencyKeyReused
from orchestrator.process import Services
from orchestrator.rules import definition_spec
from orchestrator.schemas.jobs import JobCreate
from orchestrator.services import definitions, idempotency, jobs, retention
from orchestrator.services.idempotency import Answer, Scope
from orchestrator.services.retention import Retention
from orchestrator.storage.models import IdempotencyKey, Job, utcnow
from orchestrator.storage.secret_box import SecretBox, generate_key
from tests.conftest import TEST_IMAGE

DAY = 86400.0
SCOPE = Scope("default", "jobs")
KEEP = Retention(jobs=30 * DAY, audit=365 * DAY, idempotency_keys=DAY)


@pytest.fixture
def services(make_settings: Callable[..., Settings]) -> Iterator[Services]:
    built = Services.build(make_settings(runner_enabled=False))
    with built.db.transaction() as session:
        definitions.register(
            session,
            "default",
            definition_spec.validate_spec({"name": "noop", "image": TEST_IMAGE}, "test"),
            policy=built.policy,
            limits=built.limits,
            caps=built.caps,
        )
    yield built
    built.close()


def count(services: Services, table: type[IdempotencyKey | Job]) -> int:
    with services.db.read() as session:
        return int(session.exec(select(func.count()).select_from(table)).one())


def made(fingerprint: str) -> Answer:
    """The answer a request of ``fingerprint`` got."""
    return Answer(201, f'{{"made":"{fingerprint}"}}'.encode(), {"Location": "/x"})


def keep(services: Services, key: str, fingerprint: str, *, days: float = 0) -> Answer | None:
    """Keep ``key`` with its request's answer as if ``days`` had passed: None when kept, else
    the first request's answer."""
    with services.db.transaction() as session:
        return idempotency.keep(
            session,
            SCOPE,
            key,
            [fingerprint],
            made(fingerprint),
            ttl=DAY,
            now=utcnow() + timedelta(days=days),
        )


def test_a_key_answers_as_it_first_did_until_it_expires(services: Services) -> None:
    assert keep(services, "k", "f1") is None
    assert keep(services, "k", "f1") == made("f1")
    with pytest.raises(IdempotencyKeyReused) as reused:
        keep(services, "k", "f2", days=0.99)
    assert reused.value.field == "Idempotency-Key"
    # A day later the key is another request's to take, and its row is taken over.
    assert keep(services, "k", "f2", days=1.01) is None
    assert keep(services, "k", "f2", days=1.02) == made("f2")
    assert count(services, IdempotencyKey) == 1
    # Another scope is another key.
    with services.db.transaction() as session:
        other = idempotency.keep(
            session, Scope("default", "schedules"), "k", ["f3"], made("f3"), ttl=DAY, now=utcnow()
        )
    assert other is None
    assert count(services, IdempotencyKey) == 2
    # What a failed create finds: the kept answer, none for an expired or unknown key.
    with services.db.read() as session:
        later = utcnow() + timedelta(days=2.5)  # the row was kept at 1.01 days
        assert idempotency.kept(session, SCOPE, "k", ["f2"], ttl=DAY, now=utcnow()) == made("f2")
        assert idempotency.kept(session, SCOPE, "k", ["f2"], ttl=DAY, now=later) is None
        assert idempotency.kept(session, SCOPE, "nope", ["f2"], ttl=DAY, now=utcnow()) is None
        with pytest.raises(IdempotencyKeyReused):
            idempotency.kept(session, SCOPE, "k", ["f1"], ttl=DAY, now=utcnow())


def test_retention_deletes_expired_keys_in_batches(services: Services) -> None:
    for number in range(5):
        keep(services, f"k{number}", "f")
    later = utcnow() + timedelta(days=1.5)
    with services.db.read() as session:
        assert retention.expired(session, KEEP, later).idempotency_keys == 5
    with services.db.transaction() as session:
        removed = retention.collect(session, KEEP, utcnow() + timedelta(days=0.5), 10)
    assert removed.idempotency_keys == 0
    batches = []
    while True:
        with services.db.transaction() as session:
            removed = retention.collect(session, KEEP, later, 2)
        batches.append(removed.idempotency_keys)
        if not removed.more:
            break
    assert batches == [2, 2, 1]
    assert count(services, IdempotencyKey) == 0


def test_a_create_that_fails_after_its_key_was_kept_leaves_neither_key_nor_job(
    services: Services,
) -> None:
    class Crash(Exception):
        pass

    request = JobCreate(definition="noop")
    with pytest.raises(Crash), services.db.transaction() as session:
        jobs.submit(
            session,
            services.box,
            None,
            "default",
            request,
            policy=services.policy,
            limits=services.limits,
        )
        assert (
            idempotency.keep(session, SCOPE, "k", ["f"], made("f"), ttl=DAY, now=utcnow()) is None
        )
        raise Crash  # anything between the keep and the commit
    assert (count(services, IdempotencyKey), count(services, Job)) == (0, 0)
    # The key is free: the next request keeps it.
    assert keep(services, "k", "f") is None


def test_a_fingerprint_matches_while_its_key_is_in_the_ring() -> None:
    old, new = generate_key(), generate_key()
    request = b'{"body":{"secret_env":{"T":"s3cr3t-value"}},"path":"/v1/projects/p/jobs"}'
    stored = SecretBox([old]).digests(request)[0]
    rotated = SecretBox([new, old]).digests(request)
    assert rotated[0] != stored and stored in rotated
    assert stored not in SecretBox([new]).digests(request)
    # Keyed: a guess at the body (secret included) cannot be checked against it.
    assert stored != SecretBox([new]).digests(request)[0]
    assert len(stored) == 64 and SecretBox([old]).digests(request + b" ")[0] != stored
