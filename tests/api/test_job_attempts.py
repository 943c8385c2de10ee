"""``GET .../jobs/{id}/attempts`` on a live server with real containers (SQLite and PostgreSQL):
each attempt with its runner, container, times, outcome, exit code and reason, first to last."""

from __future__ import annotations

from typing import Any

from ..conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"


def attempts(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    response = server.http.get(f"{JOBS}/{job_id}/attempts")
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def test_each_attempt_shows_how_it_ended(server: LiveServer) -> None:
    server.register(
        {
            "name": "third-time",
            "image": TEST_IMAGE,
            "command": ["sh", "-c", '[ "$ORCH_ATTEMPT" -ge 3 ] || exit 3'],
            "retry": {"attempts": 3, "backoff": {"delay": "100ms"}},
        }
    )
    job = server.submit(definition="third-time")
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done

    tried = attempts(server, job["id"])
    assert [(a["attempt"], a["outcome"], a["exit_code"], a["reason"]) for a in tried] == [
        (1, "retrying", 3, "exit_code"),
        (2, "retrying", 3, "exit_code"),
        (3, "succeeded", 0, None),
    ]
    for attempt in tried:
        assert attempt["runner"] == server.settings.runner_name
        assert attempt["container_id"]
        assert attempt["claim_time"] <= attempt["start_time"] <= attempt["end_time"]
    assert tried[0]["end_time"] <= tried[1]["claim_time"]


def test_a_timed_out_attempt_is_one_attempt_with_its_reason(server: LiveServer) -> None:
    server.register(
        {"name": "sleeper", "image": TEST_IMAGE, "command": ["sleep", "60"], "timeout": "1s"}
    )
    done = server.wait_job(server.submit(definition="sleeper")["id"])
    assert done["status"] == "failed" and done["reason"] == "timed_out", done
    (only,) = attempts(server, done["id"])
    assert (only["outcome"], only["reason"]) == ("failed", "timed_out")


def test_a_job_never_claimed_has_no_attempt_and_an_unknown_job_is_a_404(
    server: LiveServer,
) -> None:
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]})
    server.http.post("/v1/projects/default/queues", json={"name": "held", "paused": True})
    waiting = server.submit(definition="quick", queue="held")
    assert server.http.post(f"{JOBS}/{waiting['id']}/cancel").status_code == 200
    assert attempts(server, waiting["id"]) == []
    missing = server.http.get(f"{JOBS}/no-such-job/attempts")
    assert missing.status_code == 404, missing.text


def test_another_projects_job_has_no_attempts_here(server: LiveServer) -> None:
    assert server.http.post("/v1/projects", json={"name": "other"}).status_code == 201
    server.register({"name": "quick", "image": TEST_IMAGE, "command": ["true"]}, "other")
    theirs = server.http.post("/v1/projects/other/jobs", json={"definition": "quick"}).json()
    assert server.http.get(f"/v1/projects/other/jobs/{theirs['id']}/attempts").status_code == 200
    # Asked through this project, it is as unknown as a job that does not exist.
    elsewhere = server.http.get(f"{JOBS}/{theirs['id']}/attempts")
    assert elsewhere.status_code == 404, elsewhere.text
