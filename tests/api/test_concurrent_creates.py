"""Creates that race for one name (SQLite and PostgreSQL): of clients sending at once, one gets
201 and every other a 409 naming the field, never a 500. A name checked free by one request can
be taken by another before it inserts; the database's unique index then decides."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from ..conftest import TEST_IMAGE, LiveServer

PARALLEL = 16

CREATES = {
    "job": ("/v1/projects/default/jobs", {"definition": "noop", "name": "same"}),
    "schedule": (
        "/v1/projects/default/schedules",
        {"name": "same", "cron": "0 2 * * *", "target": {"job": {"definition": "noop"}}},
    ),
    "queue": ("/v1/projects/default/queues", {"name": "same"}),
    "project": ("/v1/projects", {"name": "same"}),
}


def send_together(server: LiveServer, path: str, body: dict[str, Any]) -> list[httpx.Response]:
    start = threading.Barrier(PARALLEL)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers=server.http.headers, timeout=60) as client:
            start.wait()
            return client.post(path, json=body)

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(send, range(PARALLEL)))


@pytest.mark.parametrize("kind", sorted(CREATES))
def test_one_name_sent_at_once_is_one_201_and_409s(make_server: Any, kind: str) -> None:
    server: LiveServer = make_server(runner_enabled=False)
    server.register({"name": "noop", "image": TEST_IMAGE, "command": ["true"]})
    path, body = CREATES[kind]
    answers = send_together(server, path, body)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (PARALLEL - 1), [
        a.text for a in answers if a.status_code not in (201, 409)
    ]
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["field"] == "name", refused.text
