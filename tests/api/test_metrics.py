"""``GET /metrics`` on a live server with a runner (SQLite and PostgreSQL): who may scrape it, that
Prometheus's own parser reads it, and that its numbers are the API's."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..conftest import TEST_IMAGE, LiveServer, wait_for


def scrape(client: httpx.Client, headers: dict[str, str] | None = None) -> dict[str, float]:
    """The scrape parsed by prometheus_client: ``name{label="value",...}`` -> value, labels
    sorted by name."""
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}"] = sample.value
    return values


def finished(server: LiveServer, job_id: str) -> dict[str, object]:
    def done() -> dict[str, object] | None:
        job = server.http.get(f"/v1/projects/default/jobs/{job_id}").json()
        return job if job["status"] in ("succeeded", "failed", "cancelled") else None

    return dict(wait_for(done, timeout=90))


def test_metrics_need_an_admin_token_unless_opened(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    anonymous = server.anonymous.get(f"{server.url}/metrics")
    assert anonymous.status_code == 401, anonymous.text
    made = server.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    assert made.status_code == 201, made.text
    reader = server.anonymous.get(
        f"{server.url}/metrics", headers={"Authorization": f"Bearer {made.json()['token']}"}
    )
    assert reader.status_code == 403, reader.text
    assert 'orchestrator_build_info{version="' in server.http.get("/metrics").text

    opened = make_server(runner_enabled=False, metrics_open=True)
    with httpx.Client(base_url=opened.url) as anyone:
        assert scrape(anyone)["orchestrator_webhook_deliveries_due{}"] == 0


def test_the_numbers_are_the_apis(server: LiveServer) -> None:
    parked = f"parked-{uuid.uuid4().hex[:6]}"
    made = server.http.post(
        "/v1/projects/default/queues", json={"name": parked, "max_concurrency": 3}
    )
    assert made.status_code == 201, made.text
    assert server.http.patch(
        f"/v1/projects/default/queues/{parked}", json={"paused": True}
    ).is_success
    server.register({"name": "ok", "image": TEST_IMAGE, "command": ["true"]})
    server.register({"name": "exit3", "image": TEST_IMAGE, "command": ["sh", "-c", "exit 3"]})
    before = scrape(server.http)

    for _ in range(3):
        waiting = server.http.post(
            "/v1/projects/default/jobs", json={"definition": "ok", "queue": parked}
        )
        assert waiting.status_code == 201, waiting.text
    ended = [
        finished(server, server.http.post("/v1/projects/default/jobs", json=body).json()["id"])
        for body in (
            {"definition": "ok"},
            {"definition": "exit3"},
            {"definition": "ok", "array": {"size": 2}},
        )
    ]
    assert [job["status"] for job in ended] == ["succeeded", "failed", "succeeded"]
    after = scrape(server.http)

    def grew(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    # The parked queue: its jobs by status as the API lists them, and its settings.
    listed = server.http.get(
        "/v1/projects/default/jobs", params={"queue": parked, "status": "queued", "limit": 100}
    ).json()["items"]
    assert len(listed) == 3
    parked_labels = f'project="default",queue="{parked}"'
    assert after[f'orchestrator_jobs{{{parked_labels},status="queued"}}'] == len(listed)
    assert after[f'orchestrator_jobs{{{parked_labels},status="running"}}'] == 0
    assert after[f"orchestrator_queue_paused{{{parked_labels}}}"] == 1
    assert after[f"orchestrator_queue_max_concurrency{{{parked_labels}}}"] == 3
    # What this process did: 7 jobs submitted (an array's 2 children, not its parent), 4
    # starts, 4 ends with their status and reason.
    default = 'project="default",queue="default"'
    assert grew(f"orchestrator_jobs_submitted_total{{{parked_labels}}}") == 3
    assert grew(f"orchestrator_jobs_submitted_total{{{default}}}") == 4
    assert grew(f"orchestrator_attempts_started_total{{{default}}}") == 4
    assert grew(f'orchestrator_jobs_ended_total{{{default},reason="",status="succeeded"}}') == 3
    failed = f'{default},reason="exit_code",status="failed"'
    assert grew(f"orchestrator_jobs_ended_total{{{failed}}}") == 1
    assert grew(f"orchestrator_job_queue_wait_seconds_count{{{default}}}") == 4
    assert grew(f'orchestrator_job_run_seconds_count{{{default},status="failed"}}') == 1
    # The runner, as GET /v1/runners shows it.
    (runner,) = server.http.get("/v1/runners").json()["items"]
    runner_labels = f'runner="{runner["name"]}",state="{runner["state"]}"'
    assert after[f"orchestrator_runner_capacity{{{runner_labels}}}"] == runner["capacity"]
    assert after[f"orchestrator_runner_engine_up{{{runner_labels}}}"] == 1
    assert after[f'orchestrator_runners{{state="{runner["state"]}"}}'] == 1
    assert after['orchestrator_db_pool_size{pool="write"}'] >= 1
