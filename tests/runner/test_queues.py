"""Projects and queues: defaults, CRUD, pause, priority order, concurrency limits, capacity."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..conftest import TEST_IMAGE, LiveServer, wait_for

Q = "/v1/projects/default/queues"


def test_default_project_and_queue_exist_from_the_first_start(server: LiveServer) -> None:
    projects = server.http.get("/v1/projects").json()["items"]
    assert [p["name"] for p in projects] == ["default"]
    queue = server.http.get(f"{Q}/default").json()
    assert queue["name"] == "default"
    assert queue["paused"] is False
    assert queue["max_concurrency"] is None
    assert queue["current_queue_length"] == 0
    assert queue["running"] == 0


def test_a_new_project_gets_its_default_queue_and_is_separate(server: LiveServer) -> None:
    created = server.http.post("/v1/projects", json={"name": "render-farm"})
    assert created.status_code == 201
    assert created.headers["location"] == "/v1/projects/render-farm"
    queues = server.http.get("/v1/projects/render-farm/queues").json()["items"]
    assert [q["name"] for q in queues] == ["default"]
    server.register({"name": "only-here", "image": TEST_IMAGE}, project="render-farm")
    assert server.http.get("/v1/projects/default/definitions/only-here").status_code == 404
    job = server.http.post("/v1/projects/render-farm/jobs", json={"definition": "only-here"}).json()
    assert job["project"] == "render-farm"
    assert server.http.get(f"/v1/projects/default/jobs/{job['id']}").status_code == 404


def test_queue_create_read_update_delete(server: LiveServer) -> None:
    body = {
        "name": "gpu",
        "display_name": "GPU work",
        "description": "renders",
        "priority": 10,
        "max_concurrency": 2,
        "paused": True,
    }
    created = server.http.post(Q, json=body)
    assert created.status_code == 201, created.text
    assert {k: created.json()[k] for k in body} == body
    assert created.headers["location"] == f"{Q}/gpu"

    patched = server.http.patch(f"{Q}/gpu", json={"priority": 20, "max_concurrency": None})
    assert patched.status_code == 200
    assert patched.json()["priority"] == 20
    assert patched.json()["max_concurrency"] is None
    assert patched.json()["paused"] is True
    assert patched.json()["display_name"] == "GPU work"

    listed = [q["name"] for q in server.http.get(Q).json()["items"]]
    assert listed == ["gpu", "default"]  # highest priority first

    assert server.http.delete(f"{Q}/gpu").status_code == 204
    assert server.http.get(f"{Q}/gpu").status_code == 404


def test_queue_with_waiting_jobs_cannot_be_deleted(server: LiveServer) -> None:
    server.register({"name": "idle", "image": TEST_IMAGE, "command": ["true"]})
    server.http.post(Q, json={"name": "held", "paused": True})
    job = server.submit(definition="idle", queue="held")
    refused = server.http.delete(f"{Q}/held")
    assert refused.status_code == 409
    assert "held" in refused.json()["message"]
    server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
    assert server.http.delete(f"{Q}/held").status_code == 204


def test_paused_queue_keeps_its_jobs_waiting_until_resumed(server: LiveServer) -> None:
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]})
    server.http.post(Q, json={"name": "later", "paused": True})
    held = [server.submit(definition="quick", queue="later") for _ in range(3)]
    # A job in another queue runs meanwhile: the runner is alive and passes the paused queue over.
    other = server.submit(definition="quick")
    assert server.wait_job(other["id"])["status"] == "succeeded"
    assert all(server.job(j["id"])["status"] == "queued" for j in held)
    queue = server.http.get(f"{Q}/later").json()
    assert queue["current_queue_length"] == 3
    assert queue["running"] == 0

    resumed = server.http.patch(f"{Q}/later", json={"paused": False})
    assert resumed.json()["paused"] is False
    for job in held:
        assert server.wait_job(job["id"])["status"] == "succeeded"
    assert server.http.get(f"{Q}/later").json()["current_queue_length"] == 0


def _start_order(server: LiveServer, job_ids: list[str]) -> list[str]:
    starts = {}
    for job_id in job_ids:
        (started,) = [e for e in server.events(job_id) if e["type"] == "starting"]
        starts[job_id] = datetime.fromisoformat(started["time"])
    return sorted(job_ids, key=lambda j: (starts[j], job_ids.index(j)))


def test_claim_order_queue_priority_then_job_priority_then_fifo(make_server: Any) -> None:
    server = make_server(runner_capacity=1)
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]})
    server.http.post(Q, json={"name": "low", "priority": 0, "paused": True})
    server.http.post(Q, json={"name": "high", "priority": 5, "paused": True})
    submitted = {
        "low-a": server.submit(definition="quick", queue="low")["id"],
        "low-urgent": server.submit(definition="quick", queue="low", priority=9)["id"],
        "high-a": server.submit(definition="quick", queue="high")["id"],
        "low-b": server.submit(definition="quick", queue="low")["id"],
        "high-b": server.submit(definition="quick", queue="high")["id"],
        "high-urgent": server.submit(definition="quick", queue="high", priority=3)["id"],
    }
    # High first: whatever the runner claims before the low queue is resumed is a high job, so
    # the order below holds however the two PATCHes interleave with the claims.
    server.http.patch(f"{Q}/high", json={"paused": False})
    server.http.patch(f"{Q}/low", json={"paused": False})
    for job_id in submitted.values():
        server.wait_job(job_id)
    names = {v: k for k, v in submitted.items()}
    order = [names[j] for j in _start_order(server, list(submitted.values()))]
    assert order == ["high-urgent", "high-a", "high-b", "low-urgent", "low-a", "low-b"]


def _max_overlap(server: LiveServer, job_ids: list[str]) -> int:
    points: list[tuple[datetime, int]] = []
    for job_id in job_ids:
        events = server.events(job_id)
        start = next(e for e in events if e["type"] == "starting")
        end = events[-1]
        assert end["status"] == "succeeded"
        points.append((datetime.fromisoformat(start["time"]), 1))
        points.append((datetime.fromisoformat(end["time"]), -1))
    current = peak = 0
    # At equal times, count the end first: a slot freed and refilled in the same instant.
    for _, delta in sorted(points, key=lambda p: (p[0], p[1])):
        current += delta
        peak = max(peak, current)
    return peak


def test_max_concurrency_is_never_exceeded_under_a_burst(make_server: Any) -> None:
    # 20 jobs at once on a runner that could hold 8: the queue's limit of 3 is what holds them.
    server = make_server(runner_capacity=8)
    server.register({"name": "nap", "image": TEST_IMAGE, "command": ["sleep", "0.3"]})
    server.http.post(Q, json={"name": "narrow", "max_concurrency": 3})
    peaks: list[int] = []

    def watch() -> bool:
        queue = server.http.get(f"{Q}/narrow").json()
        peaks.append(queue["running"])
        return queue["current_queue_length"] == 0 and queue["running"] == 0

    ids = [server.submit(definition="nap", queue="narrow")["id"] for _ in range(20)]
    wait_for(watch, timeout=240, interval=0.1)
    assert max(peaks) == 3  # the limit was reached, and never passed
    assert _max_overlap(server, ids) <= 3
    assert all(server.job(j)["status"] == "succeeded" for j in ids)


def test_runner_capacity_is_never_exceeded(make_server: Any) -> None:
    server = make_server(runner_capacity=2)
    server.register({"name": "nap", "image": TEST_IMAGE, "command": ["sleep", "0.3"]})
    ids = [server.submit(definition="nap")["id"] for _ in range(8)]
    for job_id in ids:
        server.wait_job(job_id)
    assert _max_overlap(server, ids) == 2
