"""PostgreSQL closing the server's connections (a restart, a terminated backend) between two
requests costs no request: the pool hands out no connection the server has closed, and nothing
written before is lost. A database that refuses connections for a while is one line in the log
when that starts and one when it ends, not a traceback from every loop that meets it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import docker
import pytest
import sqlalchemy as sa

from orchestrator.errors import DatabaseUnavailable
from orchestrator.storage.db import Database, unavailable

from ..conftest import LiveServer, admin_token, containers_of, postgres_admin, wait_for

# PostgreSQL only: SQLite has no server to close a connection.
pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]

PARALLEL = 8
NOW = sa.text("SELECT now()")


def database_name(url: str) -> str:
    return url.rpartition("/")[2]


def pooled_backends(database: str) -> int:
    """The backends of ``database`` that serve its pools (not the notify relay's, nor ours)."""
    with postgres_admin() as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'"
            " AND application_name NOT LIKE 'orchestrator-notify-%%'",
            (database,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def terminate_backends(database: str) -> int:
    """End every backend of ``database`` (as a restart would), wait until they are gone; how
    many of them served a pool."""
    before = pooled_backends(database)
    with postgres_admin() as admin:
        admin.execute(
            # Client backends only: an autovacuum worker is a superuser's, which we may not end.
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
            (database,),
        )
    wait_for(lambda: pooled_backends(database) == 0, timeout=10)
    return before


def submit_many(server: LiveServer, count: int) -> list[str]:
    """Submit ``count`` jobs, ``PARALLEL`` at a time (so several pooled connections are used);
    their ids. Every response must be a 201."""

    def one(_: int) -> str:
        return str(server.submit(definition="noop")["id"])

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(one, range(count)))


def listed_ids(server: LiveServer) -> set[str]:
    response = server.http.get("/v1/projects/default/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return {job["id"] for job in response.json()["items"]}


@contextmanager
def refusing_connections(database: str) -> Iterator[None]:
    """PostgreSQL refuses every connection to ``database`` (the ones it had are ended) until
    the block ends."""
    with postgres_admin() as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        terminate_backends(database)
        yield
    finally:
        with postgres_admin() as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')


def test_requests_after_every_connection_was_terminated_succeed(
    make_server: Callable[..., LiveServer], database_url: str
) -> None:
    server = make_server(runner_enabled=False)
    server.register({"name": "noop", "image": "busybox:1.36", "command": ["true"]})
    before = submit_many(server, 4 * PARALLEL)
    database = database_name(database_url)

    # The pool holds connections the server has now closed: none may surface as an error.
    assert terminate_backends(database) > 0
    after = submit_many(server, 4 * PARALLEL)
    assert listed_ids(server) == {*before, *after}
    job = server.job(before[0])
    assert job["status"] == "queued"
    assert [e["type"] for e in server.events(before[0])] == ["created", "queued"]

    # Twice in a row: the connections opened since are replaced as well.
    terminate_backends(database)
    assert listed_ids(server) == {*before, *after}


def test_reads_and_transactions_reconnect_after_terminated_backends(database_url: str) -> None:
    db = Database(database_url)
    try:
        db.upgrade_schema()

        def read(_: int) -> Any:
            with db.read() as session:
                return session.execute(NOW).scalar_one()

        def write(_: int) -> Any:
            with db.transaction() as session:
                return session.execute(NOW).scalar_one()

        with ThreadPoolExecutor(PARALLEL) as pool:
            list(pool.map(read, range(PARALLEL)))
            list(pool.map(write, range(PARALLEL)))
            assert terminate_backends(database_name(database_url)) > 0
            assert all(pool.map(read, range(PARALLEL)))
            assert all(pool.map(write, range(PARALLEL)))
    finally:
        db.dispose()


def test_a_database_refusing_connections_is_a_503_and_then_recovers(
    make_server: Callable[..., LiveServer], database_url: str
) -> None:
    server = make_server(runner_enabled=False, salad_organization="acme-corp")
    server.register({"name": "noop", "image": "busybox:1.36", "command": ["true"]})
    with refusing_connections(database_name(database_url)):
        response = server.http.post("/v1/projects/default/jobs", json={"definition": "noop"})
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        body = response.json()
        assert body["code"] == "database_unavailable"
        # Neither the driver's text nor the statement it ran comes back.
        assert "INSERT" not in body["message"] and "SELECT" not in body["message"]
        assert server.http.get("/v1/projects/default/jobs").status_code == 503
        # A drop-in API answers in its own shape (SaladCloud's problem details), retry included.
        salad = server.http.get(
            "/api/public/organizations/acme-corp/projects/default/queues",
            headers={"Salad-Api-Key": admin_token(server.settings)},
        )
        assert salad.status_code == 503, salad.text
        assert salad.headers["Retry-After"] == "1"
        assert salad.headers["content-type"].startswith("application/problem+json")
        assert salad.json()["status"] == 503
    job = server.submit(definition="noop")
    assert listed_ids(server) == {job["id"]}


# Long enough for every loop (claim loop, heartbeat, scheduler, HTTP targets, webhooks, notify
# relay) to meet the outage: the poll interval is 0.5 s, the heartbeat 2 s (a lease of 6 s).
OUTAGE_SECONDS = 4.0


def test_an_outage_is_one_line_when_it_starts_and_one_when_it_ends(
    make_server: Callable[..., LiveServer],
    database_url: str,
    docker_client: docker.DockerClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    server = make_server(runner_capacity=2, poll_interval=0.5, runner_lease=6.0)
    server.register({"name": "nap", "image": "busybox:1.36", "command": ["sh", "-c", "sleep 1"]})
    running = [server.submit(definition="nap")["id"] for _ in range(2)]
    for job_id in running:
        server.wait_job(job_id, {"running"})
    # Claimed once the database is back: the runner has room for two only.
    queued = [server.submit(definition="nap")["id"] for _ in range(2)]

    def exited() -> bool:
        containers = [c for j in running for c in containers_of(docker_client, j)]
        return len(containers) == len(running) and all(c.status == "exited" for c in containers)

    with refusing_connections(database_name(database_url)):
        started = time.monotonic()
        # No request meanwhile: only the background loops and the attempts meet the outage.
        # The running jobs end during it, so their attempts cannot record their outcome.
        wait_for(lambda: exited() and time.monotonic() - started >= OUTAGE_SECONDS, 30)
    for job_id in [*running, *queued]:
        assert server.wait_job(job_id)["status"] == "succeeded"

    def logged(action: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if getattr(r, "action", None) == action]

    # The requests that saw the jobs succeed ended the outage.
    [down] = logged("database_unavailable")
    [up] = logged("database_available")
    # A statement under way when its backend was ended, or a new connection refused.
    reasons = {"not accepting connections", "the server ended the connection"}
    assert down.getMessage() in {f"database unavailable: {reason}" for reason in reasons}
    assert up.getMessage().startswith("database available again after ")
    assert up.created > down.created
    # In between, only each attempt that could not record its outcome says so.
    during = [r for r in caplog.records if down.created < r.created < up.created]
    assert {getattr(r, "action", None) for r in during if r.name.startswith("orchestrator")} <= {
        "attempt_unrecorded"
    }
    # Not one traceback, nor a statement, for the loops that met the outage.
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []
    assert [r.getMessage() for r in caplog.records if "SELECT" in r.getMessage()] == []


def test_a_bug_is_no_outage_and_refused_connections_are_one(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="orchestrator.storage.db")
    sqlite = Database(f"sqlite:///{tmp_path / 'bug.db'}")
    db = Database(database_url)
    try:
        # SQLite says OperationalError for a missing table too: a bug all the same.
        for bugged in (sqlite, db):
            # It leaves the storage layer as the driver's error, not as an outage.
            with pytest.raises(sa.exc.DBAPIError) as bug, bugged.read() as session:
                session.execute(sa.text("SELECT * FROM no_such_table"))
            assert unavailable(bug.value) is None
            assert not bugged.outage.active
        with db.read() as session:
            session.execute(NOW)
        with refusing_connections(database_name(database_url)):
            for _ in range(3):
                with pytest.raises(DatabaseUnavailable) as refused, db.read() as session:
                    session.execute(NOW)
                assert refused.value.outage
                assert refused.value.reason == "not accepting connections"
                assert isinstance(refused.value.__cause__, sa.exc.OperationalError)
            with pytest.raises(DatabaseUnavailable), db.transaction() as session:
                session.execute(NOW)
            assert db.outage.active
        with db.transaction() as session:
            session.execute(NOW)
        assert not db.outage.active
    finally:
        sqlite.dispose()
        db.dispose()
    outage = {"database_unavailable", "database_available"}
    lines = [
        (r.levelno, r.getMessage().partition(" after ")[0])
        for r in caplog.records
        if getattr(r, "action", None) in outage
    ]
    assert lines == [
        (logging.WARNING, "database unavailable: not accepting connections"),
        (logging.INFO, "database available again"),
    ]
    assert not any(r.exc_info for r in caplog.records)
