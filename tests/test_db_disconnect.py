"""PostgreSQL closing the server's connections (a restart, a terminated backend) between two
requests costs no request: the pool hands out no connection the server has closed, and nothing
written before is lost."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from orchestrator.db import Database

from .conftest import LiveServer, postgres_admin, wait_for

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
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s"
            " AND pid <> pg_backend_pid() AND application_name NOT LIKE 'orchestrator-notify-%%'",
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
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = %s AND pid <> pg_backend_pid()",
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
    server = make_server(runner_enabled=False)
    server.register({"name": "noop", "image": "busybox:1.36", "command": ["true"]})
    database = database_name(database_url)
    with postgres_admin() as admin:
        admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
    try:
        terminate_backends(database)
        response = server.http.post("/v1/projects/default/jobs", json={"definition": "noop"})
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] == "1"
        body = response.json()
        assert body["code"] == "database_unavailable"
        # Neither the driver's text nor the statement it ran comes back.
        assert "INSERT" not in body["message"] and "SELECT" not in body["message"]
        assert server.http.get("/v1/projects/default/jobs").status_code == 503
    finally:
        with postgres_admin() as admin:
            admin.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
    job = server.submit(definition="noop")
    assert listed_ids(server) == {job["id"]}
