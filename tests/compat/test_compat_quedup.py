"""Quedup's drop-in API on a live server: the seed's own request example sent as written (only
the host changed and its placeholders filled), against a real local HTTP target; the job's life,
its runs, the retry ladder's first steps and Quedup's error shape."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import DATABASES, LiveServer, admin_token, module_server, wait_for
from tests.receiver import Receiver

# The seed's curl example, as written.
SEED_BODY = """
{
  "method": "POST",
  "name": "Database Backup",
  "url": "https://example.com",
  "body": "<string>",
  "headers": {},
  "run_at": "2023-11-07T05:31:56Z",
  "schedule": "<string>"
}
"""
JOB_FIELDS = {"id", "name", "method", "url", "body", "headers", "schedule", "next_run_at", "status"}


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A live server without a runner: Quedup jobs are HTTP requests, not containers."""
    return make_server(runner_enabled=False)


def seed_request(server: LiveServer, body: str) -> httpx.Response:
    """``curl --request POST --url <host>/jobs`` with the seed's headers and ``body``."""
    return server.anonymous.post(
        f"{server.url}/jobs",
        headers={
            "Authorization": f"Bearer {admin_token(server.settings)}",
            "Content-Type": "application/json",
        },
        content=body,
        timeout=30,
    )


def in_seconds(seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def create(server: LiveServer, **body: Any) -> dict[str, Any]:
    response = server.http.post("/jobs", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def job(server: LiveServer, job_id: str) -> dict[str, Any]:
    response = server.http.get(f"/jobs/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json())


def runs(server: LiveServer, job_id: str) -> list[dict[str, Any]]:
    response = server.http.get(f"/jobs/{job_id}/runs")
    assert response.status_code == 200, response.text
    return list(response.json())


def test_the_seed_example_runs_once_against_a_real_target(
    server: LiveServer, receiver: Receiver
) -> None:
    # As written, "<string>" is no cron expression: Quedup's error shape says so.
    as_written = seed_request(server, SEED_BODY.replace("https://example.com", receiver.url))
    assert as_written.status_code == 400, as_written.text
    assert set(as_written.json()) == {"error"} and "schedule" in as_written.json()["error"]

    filled = (
        SEED_BODY.replace("https://example.com", f"{receiver.url}/backup")
        .replace("2023-11-07T05:31:56Z", in_seconds(2))
        .replace('"schedule": "<string>"', '"schedule": null')
    )
    made = seed_request(server, filled)
    assert made.status_code == 200, made.text
    body = made.json()
    assert set(body) == JOB_FIELDS
    assert body["id"].startswith("job_")
    assert (body["name"], body["method"], body["body"]) == ("Database Backup", "POST", "<string>")
    assert (body["url"], body["headers"], body["schedule"]) == (f"{receiver.url}/backup", {}, None)
    assert body["status"] == "active"
    assert datetime.fromisoformat(body["next_run_at"]) > datetime.now(UTC) - timedelta(seconds=5)

    (request,) = receiver.wait_for_requests(1)
    assert (request.method, request.path, request.body) == ("POST", "/backup", b"<string>")
    done = wait_for(lambda: (j := job(server, body["id"]))["status"] == "completed" and j)
    assert done["next_run_at"] is None
    (run,) = runs(server, body["id"])
    assert (run["status"], run["attempt"], run["error"]) == (200, 1, None)
    assert run["duration_ms"] >= 0 and datetime.fromisoformat(run["time"])


def test_headers_are_sent_and_credentials_shown_masked(
    server: LiveServer, receiver: Receiver
) -> None:
    made = create(
        server,
        method="put",
        name="Ping with auth",
        url=receiver.url,
        body='{"a": 1}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer s3cr3t"},
        run_at=in_seconds(1),
    )
    assert made["method"] == "PUT"
    assert made["headers"] == {"Content-Type": "application/json", "Authorization": "***"}
    (request,) = receiver.wait_for_requests(1)
    assert request.headers["authorization"] == "Bearer s3cr3t"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == {"a": 1}
    assert "s3cr3t" not in server.http.get("/jobs").text


def test_cron_list_get_patch_pause_resume_delete(server: LiveServer, receiver: Receiver) -> None:
    cron = create(
        server,
        method="GET",
        name="Every five",
        url=receiver.url,
        schedule="*/5 * * * *",
        run_at=in_seconds(1),  # the schedule wins
    )
    assert cron["schedule"] == "*/5 * * * *" and cron["status"] == "active"
    first = datetime.fromisoformat(cron["next_run_at"])
    assert first.minute % 5 == 0 and first > datetime.now(UTC)
    other = create(server, method="POST", name="Later", url=receiver.url, run_at=in_seconds(3600))
    assert [j["name"] for j in server.http.get("/jobs").json()] == ["Every five", "Later"]
    assert job(server, cron["id"]) == cron

    paused = server.http.patch(f"/jobs/{cron['id']}", json={"status": "paused"})
    assert paused.status_code == 200, paused.text
    assert (paused.json()["status"], paused.json()["next_run_at"]) == ("paused", None)
    changed = server.http.patch(
        f"/jobs/{cron['id']}",
        json={"status": "active", "url": f"{receiver.url}/new", "name": "Every five (new)"},
    )
    assert changed.status_code == 200, changed.text
    now = changed.json()
    assert (now["status"], now["url"], now["name"]) == (
        "active",
        f"{receiver.url}/new",
        "Every five (new)",
    )
    assert (now["method"], now["schedule"], now["id"]) == ("GET", "*/5 * * * *", cron["id"])
    assert now["next_run_at"] is not None

    no_time = server.http.patch(f"/jobs/{cron['id']}", json={"schedule": None})
    assert no_time.status_code == 400 and "schedule" in no_time.json()["error"]
    later = in_seconds(7200)
    one_shot = server.http.patch(f"/jobs/{cron['id']}", json={"schedule": None, "run_at": later})
    assert one_shot.status_code == 200, one_shot.text
    assert one_shot.json()["schedule"] is None
    assert datetime.fromisoformat(one_shot.json()["next_run_at"]) == datetime.fromisoformat(later)
    taken = server.http.patch(f"/jobs/{other['id']}", json={"name": "Every five (new)"})
    assert taken.status_code == 409 and "name" in taken.json()["error"]

    deleted = server.http.delete(f"/jobs/{other['id']}")
    assert deleted.status_code == 200 and deleted.json()["id"] == other["id"]
    assert server.http.get(f"/jobs/{other['id']}").status_code == 404
    assert [j["id"] for j in server.http.get("/jobs").json()] == [cron["id"]]


def test_the_default_ladder_retries_at_once_then_waits(
    server: LiveServer, receiver: Receiver
) -> None:
    receiver.answer_with(then=500)
    made = create(server, method="POST", name="Flaky", url=receiver.url, run_at=in_seconds(1))
    receiver.wait_for_requests(2)
    attempts = wait_for(lambda: len(r := runs(server, made["id"])) == 2 and r)
    assert [(a["attempt"], a["status"]) for a in attempts] == [(2, 500), (1, 500)]
    # The third attempt is 5 minutes away: the job is not finished.
    assert job(server, made["id"])["status"] == "active"
    assert len(receiver.received) == 2


OK = {"method": "POST", "name": "x", "url": "http://a.example/", "schedule": "@daily"}


@pytest.fixture(scope="module", params=DATABASES)
def refusing_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_client: docker.DockerClient,
) -> Iterator[LiveServer]:
    """One server per database (without a runner, as ``server``) for the refused bodies below:
    a refused body changes nothing."""
    root = tmp_path_factory.mktemp(f"quedup-{request.param}")
    with module_server(request.param, root, docker_client, runner_enabled=False) as server:
        yield server


def without(*fields: str) -> dict[str, Any]:
    return {key: value for key, value in OK.items() if key not in fields}


@pytest.mark.parametrize(
    ("body", "word"),
    [
        (without("method"), "method"),
        (without("name"), "name"),
        (without("url"), "url"),
        ({**OK, "method": "BREW"}, "method"),
        ({**OK, "url": "not a url"}, "url"),
        (without("schedule"), "schedule"),
        ({**OK, "schedule": "61 * * * *"}, "schedule"),
        ({**without("schedule"), "run_at": "tomorrow"}, "run_at"),
        ({**without("schedule"), "run_at": "2030-01-01T00:00:00"}, "run_at"),
        ({**OK, "headers": {"X": "a\r\nB: c"}}, "headers"),
        ({**OK, "colour": "red"}, "colour"),
        ({**OK, "url": "http://user:pw@a.example/"}, "url: must not carry credentials"),
    ],
)
def test_bad_bodies_get_a_400_in_quedups_shape(
    refusing_server: LiveServer, body: dict[str, Any], word: str
) -> None:
    response = refusing_server.http.post("/jobs", json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and word in response.json()["error"]
    assert "pw" not in response.json()["error"]  # the reason, not the input


def test_a_credential_header_too_short_to_mask_is_refused(server: LiveServer) -> None:
    for value in ("x", "é✓", "ñ§¤"):  # 1 to 3 characters: masking them would show them
        response = server.http.post("/jobs", json={**OK, "headers": {"Authorization": value}})
        assert response.status_code == 400, response.text
        assert set(response.json()) == {"error"}
        assert response.json()["error"].startswith("headers.Authorization: ")
        assert "at least 4 characters" in response.json()["error"]
    made = create(server, **{**OK, "headers": {"Authorization": "ñ§¤x", "X-Plain": "x"}})
    assert made["headers"] == {"Authorization": "***", "X-Plain": "x"}
    changed = server.http.patch(f"/jobs/{made['id']}", json={"headers": {"Cookie": "a=b"}})
    assert changed.status_code == 400 and "headers.Cookie: " in changed.json()["error"]


def test_errors_in_quedups_shape(server: LiveServer) -> None:
    made = create(server, method="POST", name="Once", url="http://a.example/", schedule="@daily")
    duplicate = server.http.post(
        "/jobs",
        json={"method": "GET", "name": "Once", "url": "http://b.example/", "schedule": "@daily"},
    )
    assert duplicate.status_code == 409 and "Once" in duplicate.json()["error"]
    for path in ("/jobs/job_0123456789abcdef0123456789abcdef", "/jobs/nope", "/jobs/nope/runs"):
        missing = server.http.get(path)
        assert missing.status_code == 404 and set(missing.json()) == {"error"}, path
        assert missing.json()["error"].startswith("job '"), path
    assert server.http.patch("/jobs/nope", json={"status": "paused"}).status_code == 404
    assert server.http.delete("/jobs/nope").status_code == 404
    bad_status = server.http.patch(f"/jobs/{made['id']}", json={"status": "completed"})
    assert bad_status.status_code == 400 and "status" in bad_status.json()["error"]
    not_json = server.http.post("/jobs", content=b"{", headers={"Content-Type": "application/json"})
    assert not_json.status_code == 400 and set(not_json.json()) == {"error"}

    for headers in ({}, {"Authorization": "Bearer wrong"}):
        anonymous = server.anonymous.get(f"{server.url}/jobs", headers=headers)
        assert anonymous.status_code == 401 and set(anonymous.json()) == {"error"}
        assert anonymous.headers["www-authenticate"] == "Bearer"
    created = server.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    reader = {"Authorization": f"Bearer {created.json()['token']}"}
    assert (
        server.anonymous.get(f"{server.url}/jobs/{made['id']}", headers=reader).status_code == 200
    )
    refused = server.anonymous.delete(f"{server.url}/jobs/{made['id']}", headers=reader)
    assert refused.status_code == 403 and set(refused.json()) == {"error"}


def test_body_is_a_string_both_ways(server: LiveServer) -> None:
    # Given as text, shown as it was given.
    made = create(server, **{**OK, "body": '{"a": [1, 2]}'})
    assert made["body"] == '{"a": [1, 2]}'
    # None given: an empty string, as Quedup's Job types it (a string, never null).
    bare = create(server, **{**OK, "name": "bare"})
    assert bare["body"] == "" and job(server, bare["id"])["body"] == ""
    assert all(isinstance(listed["body"], str) for listed in server.http.get("/jobs").json())
    document = server.http.get("/openapi.json").json()["components"]["schemas"]
    assert document["QuedupJob"]["properties"]["body"]["type"] == "string"

    # A JSON document given as itself (an older client's habit) is refused, naming the field:
    # it is not turned into text, so the job never shows something else than what was given.
    for body in ({"a": 1}, [1, 2], 3, True):
        refused = server.http.post("/jobs", json={**OK, "name": "object", "body": body})
        assert refused.status_code == 400, refused.text
        assert set(refused.json()) == {"error"}
        assert refused.json()["error"].startswith("body: must be a string")
        changed = server.http.patch(f"/jobs/{made['id']}", json={"body": body})
        assert changed.status_code == 400 and changed.json()["error"].startswith("body: ")
    assert [listed["name"] for listed in server.http.get("/jobs").json()] == ["x", "bare"]
    assert job(server, made["id"])["body"] == '{"a": [1, 2]}'
