"""Every way a job is made gives it a version 7 UUID carrying its creation time (see
``rules/ids.py``): a plain submit, an array's parent and children, a TES task, and a job
submitted through Daestro's API (which chooses the id before the submit)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from tests.compat.test_compat_daestro import SEED_CURL_BODY, post_raw, setup_project
from tests.conftest import TEST_IMAGE, LiveServer


def made_between(job_id: str, before_ms: int, after_ms: int) -> bool:
    parsed = uuid.UUID(job_id)
    return parsed.version == 7 and before_ms <= parsed.int >> 80 <= after_ms


def test_jobs_arrays_tes_tasks_and_daestro_jobs_get_time_ordered_ids(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    server.register({"name": "noop", "image": TEST_IMAGE, "command": ["true"]})
    setup_project(server, "my-project", "first-job-queue")
    before = time.time_ns() // 1_000_000
    first = server.submit(definition="noop")["id"]
    second = server.submit(definition="noop")["id"]
    parent = server.submit(definition="noop", array={"size": 3})["id"]
    listed = server.http.get(f"/v1/projects/default/jobs/{parent}/children")
    assert listed.status_code == 200, listed.text
    children = [child["id"] for child in listed.json()["items"]]
    task = server.http.post(
        "/ga4gh/tes/v1/tasks",
        json={"executors": [{"image": TEST_IMAGE, "command": ["true"]}]},
    )
    assert task.status_code == 200, task.text
    daestro = post_raw(server, SEED_CURL_BODY)
    assert daestro.status_code == 202, daestro.text
    after = time.time_ns() // 1_000_000
    made = [first, second, parent, *children, task.json()["id"], daestro.json()["data"]["id"]]
    assert len(children) == 3
    assert all(made_between(job_id, before, after) for job_id in made), made
    # Made one after the other: their milliseconds in that order.
    millis = [uuid.UUID(job_id).int >> 80 for job_id in made]
    assert millis == sorted(millis)
