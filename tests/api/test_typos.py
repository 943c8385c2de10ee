"""Typos are errors: a parameter nothing reads, an unknown query parameter on a native route; and
the job list's filters (definition, status, queue, name, created before and after) with cursor
paging. On a live server, SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import event

from tests.conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"
RENDER = {
    "name": "render",
    "image": TEST_IMAGE,
    # ``frame`` is declared (a default), ``size`` only used.
    "command": ["echo", "Param::frame", "Ref::size"],
    "parameters": {"frame": 1},
}


def expect_400(response: Any, field: str, *words: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["field"] == field, body
    for word in words:
        assert word in body["message"], body


def test_a_parameter_that_nothing_reads_is_a_400_naming_it(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    server.register(RENDER)
    server.register({"name": "bare", "image": TEST_IMAGE})
    assert server.submit(definition="render", parameters={"frame": 2, "size": 3})
    # A parameter the submission's own command uses is read.
    given = server.submit(
        definition="render", command=["echo", "Param::extra"], parameters={"extra": "x"}
    )
    assert given["command"] == ["echo", "x"]
    response = server.http.post(
        JOBS, json={"definition": "render", "parameters": {"size": 3, "nope": 1}}
    )
    expect_400(response, "parameters.nope", "render:1", "frame, size")
    response = server.http.post(JOBS, json={"definition": "bare", "parameters": {"x": 1}})
    expect_400(response, "parameters.x", "none")

    # A schedule's job target is checked as a submission.
    response = server.http.post(
        "/v1/projects/default/schedules",
        json={
            "name": "typo",
            "cron": "0 * * * *",
            "target": {"job": {"definition": "render", "parameters": {"size": 1, "nope": 1}}},
        },
    )
    expect_400(response, "target.job.parameters.nope")

    # Daestro's container_cmd_parameter too, answered in Daestro's shape with its field's name.
    daestro = {
        "job_definition": "default::render:1",
        "job_queue": "default::default",
        "container_cmd_parameter": {"size": "1", "nope": "1"},
    }
    response = server.http.post("/v1/client/job", json=daestro)
    assert response.status_code == 400, response.text
    assert response.json()["ok"] is False
    assert response.json()["message"].startswith("container_cmd_parameter.nope: ")
    assert len(server.http.get(JOBS).json()["items"]) == 2


def test_an_unknown_query_parameter_is_a_400_naming_it(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    server.register(RENDER)
    job = server.submit(definition="render", parameters={"size": 1})
    made = server.http.post(
        "/v1/projects/default/schedules",
        json={"name": "hourly", "cron": "0 * * * *", "target": {"job": job_target()}},
    )
    assert made.status_code == 201, made.text
    lists = [
        "/v1/projects",
        "/v1/projects/default/audit",
        "/v1/projects/default/queues",
        "/v1/projects/default/definitions",
        "/v1/projects/default/definitions/render/versions",
        JOBS,
        f"{JOBS}/{job['id']}/events",
        f"{JOBS}/{job['id']}/deliveries",
        "/v1/projects/default/schedules",
        "/v1/projects/default/schedules/hourly/runs",
        "/v1/tokens",
        "/v1/runners",
    ]
    for path in lists:
        assert server.http.get(path).status_code == 200, path
        response = server.http.get(path, params={"staus": "queued"})
        expect_400(response, "staus", "unknown query parameter")
    # The names the endpoint does take are listed.
    expect_400(server.http.get(JOBS, params={"stat": "x"}), "stat", "status", "created_after")
    # Not only lists: a read of one job, a cancel.
    expect_400(server.http.get(f"{JOBS}/{job['id']}", params={"fields": "input"}), "fields")
    expect_400(server.http.post(f"{JOBS}/{job['id']}/cancel", params={"force": "1"}), "force")
    # The drop-in APIs keep their products' leniency.
    assert server.http.get("/jobs", params={"page": 2}).status_code == 200


def job_target() -> dict[str, Any]:
    return {"definition": "render", "parameters": {"size": 1}}


def ids(server: LiveServer, **params: Any) -> list[str]:
    response = server.http.get(JOBS, params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    assert response.json()["next_cursor"] is None
    return [item["id"] for item in response.json()["items"]]


def test_the_job_list_filters_and_pages_with_them(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    server.http.post("/v1/projects/default/queues", json={"name": "other"}).raise_for_status()
    server.register({"name": "aa", "image": TEST_IMAGE, "command": ["true"]})
    server.register({"name": "bb", "image": TEST_IMAGE, "command": ["true"]})
    server.register({"name": "bb", "image": TEST_IMAGE, "command": ["false"]})
    later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    jobs = [
        server.submit(definition="aa", name="first"),
        server.submit(definition="bb:1", queue="other"),
        server.submit(definition="aa", queue="other", name="third", schedule_at=later),
        server.submit(definition="bb"),
        server.submit(definition="aa"),
    ]
    j1, j2, j3, j4, j5 = (job["id"] for job in jobs)
    server.http.post(f"{JOBS}/{j4}/cancel").raise_for_status()

    assert ids(server) == [j5, j4, j3, j2, j1]
    assert ids(server, queue="other") == [j3, j2]
    assert ids(server, status="queued") == [j5, j2, j1]
    assert ids(server, status="scheduled") == [j3]
    assert ids(server, status="cancelled") == [j4]
    assert ids(server, definition="aa") == [j5, j3, j1]
    assert ids(server, definition="bb") == [j4, j2]
    assert ids(server, definition="bb:1") == [j2]
    assert ids(server, definition="bb:2") == [j4]
    assert ids(server, definition="cc") == []
    assert ids(server, name="first") == [j1]
    assert ids(server, name="nobody") == []
    assert ids(server, queue="default", definition="aa", status="queued") == [j5, j1]
    created = [job["create_time"] for job in jobs]
    assert ids(server, created_after=created[2]) == [j5, j4, j3]
    assert ids(server, created_before=created[2]) == [j2, j1]
    assert ids(server, created_after=created[1], created_before=created[3]) == [j3, j2]
    assert ids(server, created_after=later) == []

    # The cursor goes on under the same filter, a job at a time.
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"definition": "aa", "limit": 1}
        if cursor:
            params["cursor"] = cursor
        body = server.http.get(JOBS, params=params).json()
        pages.append([item["id"] for item in body["items"]])
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert [job for page in pages for job in page] == [j5, j3, j1]


def test_a_bad_filter_is_a_400_naming_it(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False)
    for params, field in [
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-13-01T00:00:00Z"}, "created_before"),
        ({"status": "done"}, "status"),
        ({"definition": "Not A Name!"}, "definition"),
        ({"definition": "aa:0"}, "definition"),
        ({"definition": "aa:99999999999999999999"}, "definition"),
    ]:
        expect_400(server.http.get(JOBS, params=params), field)


def test_the_job_list_reads_its_filters_from_indexes(
    make_server: Callable[..., LiveServer],
) -> None:
    # On SQLite as shipped (no statistics), and on PostgreSQL told to prefer an index (its
    # tables are too small here for a plan of its own choosing to say anything).
    server = make_server(runner_enabled=False)
    server.register({"name": "aa", "image": TEST_IMAGE, "command": ["true"]})
    server.submit(definition="aa", name="first")
    postgres = server.services.db.is_postgres
    explain = "EXPLAIN " if postgres else "EXPLAIN QUERY PLAN "
    plans: list[str] = []

    def seen(_conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM jobs" in statement and "ORDER BY jobs.seq DESC" in statement:
            if postgres:
                cursor.execute("SET enable_seqscan = off")
            cursor.execute(explain + statement, parameters)
            plans.append(" / ".join(str(row[-1]) for row in cursor.fetchall()))
            if postgres:
                cursor.execute("RESET enable_seqscan")

    engine = server.services.db.read_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for params in ({}, {"definition": "aa"}, {"name": "first"}):
            ids(server, **params)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    newest, definition, name = plans
    assert "ix_jobs_project_definition" in definition, definition
    assert "ix_jobs_project_name" in name, name
    if not postgres:
        assert "ix_jobs_project_seq" in newest, newest
        assert not [plan for plan in plans if "TEMP B-TREE" in plan], plans
