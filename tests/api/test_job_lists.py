"""A list of jobs stays small: each job is its summary unless ``?fields=`` names more, and a page
ends before it passes ``ORCH_LIST_PAGE_MAX_BYTES``; ``GET`` of one job gives it whole. On a live
server, SQLite and PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from itertools import pairwise
from typing import Any

from sqlalchemy import event

from tests.conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"
DOCUMENT_FIELDS = {"command", "parameters", "env", "secret_env", "input", "metadata", "output"}
SUMMARY_FIELDS = {
    "id", "project", "queue", "definition", "name", "status", "priority", "attempt",
    "max_attempts", "interrupted_attempts", "exit_code", "error", "reason", "container_id",
    "runner", "webhook", "timeout", "schedule_at", "create_time", "update_time", "start_time",
    "finish_time", "parent_id", "array_index", "array_size", "children",
}  # fmt: skip


def waiting_server(make_server: Callable[..., LiveServer], **settings: Any) -> LiveServer:
    """A server whose jobs wait (no runner), with a definition ``echo`` to submit."""
    server = make_server(runner_enabled=False, **settings)
    server.register(
        {
            "name": "echo",
            "image": TEST_IMAGE,
            "command": ["echo", "Param::word"],
            "parameters": {"word": "hi"},
        }
    )
    return server


def submit_full(server: LiveServer, n: int) -> dict[str, Any]:
    """A job with every document field set."""
    return server.submit(
        definition="echo",
        name=f"job-{n}",
        parameters={"word": f"w{n}"},
        env={"MODE": "fast"},
        secret_env={"TOKEN": "s3cr3t-value-long-enough"},
        input={"n": n, "text": "in"},
        metadata={"team": "data"},
        webhook="http://user:pw@127.0.0.1:9/hook",
    )


def listed(server: LiveServer, **params: Any) -> list[dict[str, Any]]:
    response = server.http.get(JOBS, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_a_list_shows_summaries_and_get_shows_the_whole_job(
    make_server: Callable[..., LiveServer],
) -> None:
    server = waiting_server(make_server)
    ids = [submit_full(server, n)["id"] for n in range(3)]
    items = listed(server)
    assert [item["id"] for item in items] == ids[::-1]
    for item in items:
        assert set(item) == SUMMARY_FIELDS
        whole = server.job(item["id"])
        assert set(whole) == SUMMARY_FIELDS | DOCUMENT_FIELDS | {
            "depends_on",
            "dependents",
            "retry",
        }
        assert {key: whole[key] for key in SUMMARY_FIELDS} == item
        assert whole["input"]["text"] == "in" and whole["metadata"] == {"team": "data"}
        assert whole["secret_env"] == {"TOKEN": "***"}
        assert item["webhook"] == "http://***@127.0.0.1:9/hook"


def test_fields_adds_exactly_the_fields_named(make_server: Callable[..., LiveServer]) -> None:
    server = waiting_server(make_server)
    job_id = submit_full(server, 7)["id"]
    whole = server.job(job_id)
    for params, named in (
        ({"fields": "input,output"}, {"input", "output"}),
        ({"fields": " metadata , input"}, {"input", "metadata"}),
        ({"fields": ["env", "secret_env"]}, {"env", "secret_env"}),
        ({"fields": ",".join(sorted(DOCUMENT_FIELDS))}, DOCUMENT_FIELDS),
        ({"fields": ""}, set()),
    ):
        [item] = listed(server, **params)
        assert set(item) == SUMMARY_FIELDS | named, params
        assert item == {key: whole[key] for key in item}, params
    [item] = listed(server, fields="secret_env,parameters,command")
    assert item["secret_env"] == {"TOKEN": "***"}
    assert item["parameters"] == {"word": "w7"} and item["command"] == ["echo", "w7"]


def test_an_unknown_field_is_refused_naming_fields_and_the_name(
    make_server: Callable[..., LiveServer],
) -> None:
    server = waiting_server(make_server)
    submit_full(server, 1)
    for value in ("bogus", "input,bogus", "id"):
        response = server.http.get(JOBS, params={"fields": value})
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["field"] == "fields"
        assert f"'{value.split(',')[-1]}'" in body["message"]


def compact(item: dict[str, Any]) -> bytes:
    return json.dumps(item, separators=(",", ":"), ensure_ascii=False).encode()


def walk(server: LiveServer, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of the list, following the cursor."""
    pages = []
    cursor = None
    while True:
        response = server.http.get(
            JOBS, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages


def test_large_inputs_page_by_bytes_and_the_cursor_walks_each_job_once(
    make_server: Callable[..., LiveServer],
) -> None:
    bound = 2 * 1024 * 1024
    server = waiting_server(make_server, max_input_bytes=600_000, list_page_max_bytes=bound)
    blob = 512 * 1024
    ids = [
        server.submit(definition="echo", input={"n": n, "blob": chr(65 + n % 26) * blob})["id"]
        for n in range(40)
    ]
    # Summaries: all forty on one page.
    [page] = walk(server, limit=500)
    assert [item["id"] for item in page] == ids[::-1]

    pages = walk(server, limit=500, fields="input")
    assert [item["id"] for page in pages for item in page] == ids[::-1]
    assert len(pages) > 1
    for page in pages:
        assert page, "a page holds at least one job"
        assert sum(len(compact(item)) + 1 for item in page) <= bound
        for item in page:
            n = item["input"]["n"]
            assert item["id"] == ids[n] and item["input"]["blob"] == chr(65 + n % 26) * blob
    # Each page ended only because the next job would have passed the bound.
    for page, following in pairwise(pages):
        size = sum(len(compact(item)) + 1 for item in page)
        assert size + len(compact(following[0])) + 1 > bound
    # The row bound still holds with the byte bound.
    pages = walk(server, limit=1, fields="input")
    assert [item["id"] for page in pages for item in page] == ids[::-1]


def test_a_job_larger_than_the_bound_still_makes_a_page(
    make_server: Callable[..., LiveServer],
) -> None:
    bound = 65_536
    server = waiting_server(make_server, list_page_max_bytes=bound)
    ids = [server.submit(definition="echo", input="x" * 100_000)["id"] for _ in range(3)]
    pages = walk(server, fields="input")
    assert [[item["id"] for item in page] for page in pages] == [[i] for i in ids[::-1]]
    assert all(page[0]["input"] == "x" * 100_000 for page in pages)


def test_a_list_reads_only_the_columns_it_shows(make_server: Callable[..., LiveServer]) -> None:
    server = waiting_server(make_server)
    submit_full(server, 1)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if "FROM jobs" in statement and "ORDER BY jobs.seq DESC" in statement:
            statements.append(statement)

    engine = server.services.db.read_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        listed(server)
        listed(server, fields="input,metadata")
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    summary, with_fields = statements
    columns = ("command", "parameters", "env", "secret_env_keys", "input", "metadata", "output")
    assert "jobs.status" in summary
    assert not [c for c in columns if f"jobs.{c}" in summary]
    assert [c for c in columns if f"jobs.{c}" in with_fields] == ["input", "metadata"]
