"""``Idempotency-Key`` on every create route (native jobs and schedules, SaladCloud, Daestro and
Quedup job creation), on a live server, SQLite and PostgreSQL: a request sent again gets its
first answer and creates nothing; another request with the key is a 422, a bad key a 400, both
naming the header in the route's own error shape; parallel clients sending one key make one
thing; keys are scoped to the project, the token's access and the route; a refused request
keeps no key; a kept answer holds no secret; an expired key is free again and pruned.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlmodel import select

from orchestrator.services import retention
from orchestrator.services.retention import Retention
from orchestrator.storage.models import IdempotencyKey, utcnow
from tests.conftest import TEST_IMAGE, LiveServer, bearer

HEADER = "Idempotency-Key"
JOBS = "/v1/projects/default/jobs"
SCHEDULES = "/v1/projects/default/schedules"
SALAD_JOBS = "/api/public/organizations/acme-corp/projects/default/queues/default/jobs"
NOOP = {"name": "noop", "image": TEST_IMAGE, "command": ["true"]}
SECRET = "s3cr3t-token-value-0451"
PARALLEL = 16


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A live server without a runner (nothing created here needs to run), with ``noop``."""
    live = make_server(runner_enabled=False)
    live.register(NOOP)
    return live


def keyed(key: str) -> dict[str, str]:
    return {HEADER: key}


def count_jobs(server: LiveServer, project: str = "default") -> int:
    response = server.http.get(f"/v1/projects/{project}/jobs", params={"limit": 500})
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def count_schedules(server: LiveServer) -> int:
    response = server.http.get(SCHEDULES)
    assert response.status_code == 200, response.text
    return len(response.json()["items"])


def count_quedup(server: LiveServer) -> int:
    response = server.http.get("/jobs")
    assert response.status_code == 200, response.text
    return len(response.json())


def key_rows(server: LiveServer) -> list[IdempotencyKey]:
    with server.services.db.read() as session:
        return list(session.exec(select(IdempotencyKey).order_by(IdempotencyKey.id)).all())


def native_error(response: httpx.Response) -> str:
    answer = response.json()
    assert set(answer) == {"code", "message", "field"}, answer
    assert answer["field"] == HEADER, answer
    return str(answer["message"])


def salad_error(response: httpx.Response) -> str:
    assert response.headers["content-type"] == "application/problem+json", response.text
    answer = response.json()
    assert answer["status"] == response.status_code and answer["type"] == "about:blank", answer
    return str(answer["detail"])


def daestro_error(response: httpx.Response) -> str:
    answer = response.json()
    assert set(answer) == {"ok", "message"} and answer["ok"] is False, answer
    return str(answer["message"])


def quedup_error(response: httpx.Response) -> str:
    answer = response.json()
    assert set(answer) == {"error"}, answer
    return str(answer["error"])


@dataclass(frozen=True)
class Route:
    """A create route: a request, another request, its status, what counts what it made and
    how its error body says why."""

    name: str
    path: str
    body: dict[str, Any]
    other: dict[str, Any]
    status: int
    count: Callable[[LiveServer], int]
    error: Callable[[httpx.Response], str]


HOOK = "http://127.0.0.1:9/hook"
ROUTES = (
    Route(
        "jobs",
        JOBS,
        {"definition": "noop", "input": {"n": 1}, "metadata": {"a": 1, "b": 2}},
        {"definition": "noop", "input": {"n": 2}},
        201,
        count_jobs,
        native_error,
    ),
    Route(
        "schedules",
        SCHEDULES,
        {"name": "nightly", "cron": "0 2 * * *", "target": {"job": {"definition": "noop"}}},
        {"name": "nightly", "cron": "0 3 * * *", "target": {"job": {"definition": "noop"}}},
        201,
        count_schedules,
        native_error,
    ),
    Route(
        "salad",
        SALAD_JOBS,
        {"input": {"frame": 7}, "metadata": {"scene": "intro"}},
        {"input": {"frame": 8}},
        201,
        count_jobs,
        salad_error,
    ),
    Route(
        "daestro",
        "/v1/client/job",
        {"job_definition": "default::noop:1", "job_queue": "default::default"},
        {"job_definition": "default::noop:1", "job_queue": "default::default", "name": "x"},
        202,
        count_jobs,
        daestro_error,
    ),
    Route(
        "quedup",
        "/jobs",
        {"method": "POST", "name": "backup", "url": HOOK, "schedule": "0 2 * * *"},
        {"method": "POST", "name": "backup", "url": HOOK, "schedule": "0 4 * * *"},
        200,
        count_quedup,
        quedup_error,
    ),
)


def test_every_create_route_answers_a_request_sent_again_as_it_did_and_makes_nothing(
    server: LiveServer,
) -> None:
    for route in ROUTES:
        before = route.count(server)
        first = server.http.post(route.path, json=route.body, headers=keyed(f"{route.name}-1"))
        assert first.status_code == route.status, (route.name, first.text)
        assert "idempotent-replayed" not in first.headers
        # The same request as another client writes it: its keys in another order, spaced.
        reordered = json.dumps(dict(reversed(route.body.items())), indent=2)
        again = server.http.post(
            route.path,
            content=reordered,
            headers={**keyed(f"{route.name}-1"), "Content-Type": "application/json"},
        )
        assert again.status_code == route.status, (route.name, again.text)
        assert again.content == first.content, route.name
        assert again.headers.get("location") == first.headers.get("location"), route.name
        assert again.headers["idempotent-replayed"] == "true", route.name
        # The draft's form, a quoted string, is the same key.
        quoted = server.http.post(route.path, json=route.body, headers=keyed(f'"{route.name}-1"'))
        assert (quoted.status_code, quoted.content) == (route.status, first.content), route.name
        assert route.count(server) == before + 1, route.name

        # The key with another request: a 422 naming the header, and nothing made.
        other = server.http.post(route.path, json=route.other, headers=keyed(f"{route.name}-1"))
        assert other.status_code == 422, (route.name, other.text)
        assert route.error(other).startswith(f"{HEADER}: this key was used"), route.name
        # An empty key: a 400 naming the header, in the route's shape too.
        empty = server.http.post(route.path, json=route.other, headers=keyed(""))
        assert empty.status_code == 400, (route.name, empty.text)
        assert route.error(empty) == f"{HEADER}: must not be empty", route.name
        assert route.count(server) == before + 1, route.name
    # Without a key every request is one of its own.
    for _ in range(2):
        assert server.http.post(JOBS, json={"definition": "noop"}).status_code == 201
    assert count_jobs(server) == 3 + 2
    assert len(key_rows(server)) == len(ROUTES)


def test_a_bad_key_is_a_400_naming_the_header_and_never_quoting_it(server: LiveServer) -> None:
    body = {"definition": "noop"}
    refused = {
        "x" * 256: "at most 255 characters, got 256",
        '""': "must not be empty",
        '"a"b"': 'a quoted key holds a " only as \\"',
        f"{SECRET}\tx": "only printable ASCII characters",
    }
    for key, reason in refused.items():
        response = server.http.post(JOBS, json=body, headers=keyed(key))
        assert response.status_code == 400, (key, response.text)
        assert response.json() == {
            "code": "invalid_request",
            "message": f"{HEADER}: {reason}",
            "field": HEADER,
        }
    # Bytes that are not ASCII, and the header twice.
    latin = server.http.post(JOBS, json=body, headers={HEADER: "café".encode()})
    assert latin.status_code == 400, latin.text
    assert latin.json()["message"] == f"{HEADER}: only printable ASCII characters"
    twice = server.http.post(
        JOBS, json=body, headers=httpx.Headers([(HEADER, "one"), (HEADER, "two")])
    )
    assert twice.status_code == 400, twice.text
    assert twice.json()["message"] == f"{HEADER}: sent 2 times; send one key"
    assert count_jobs(server) == 0
    # The longest key is a key.
    assert server.http.post(JOBS, json=body, headers=keyed("k" * 255)).status_code == 201


def send_together(server: LiveServer, route: Route, key: str) -> list[httpx.Response]:
    """``PARALLEL`` clients, each on its own connection, sending the route's request with
    ``key`` at once."""
    start = threading.Barrier(PARALLEL)

    def send(_: int) -> httpx.Response:
        with httpx.Client(base_url=server.url, headers=server.http.headers, timeout=60) as client:
            start.wait()
            return client.post(route.path, json=route.body, headers=keyed(key))

    with ThreadPoolExecutor(PARALLEL) as pool:
        return list(pool.map(send, range(PARALLEL)))


def test_parallel_clients_sending_one_key_make_one_thing_on_every_create_route(
    server: LiveServer,
) -> None:
    for route in ROUTES:
        before = route.count(server)
        answers = send_together(server, route, f"together-{route.name}")
        assert [a.status_code for a in answers] == [route.status] * PARALLEL, [
            a.text for a in answers if a.status_code != route.status
        ]
        assert len({a.content for a in answers}) == 1, route.name
        # One made it; the others waited for it and answered as it did.
        made = [a for a in answers if "idempotent-replayed" not in a.headers]
        assert len(made) == 1, route.name
        assert route.count(server) == before + 1, route.name


def test_parallel_clients_sending_one_key_for_a_named_job_make_it_once(
    server: LiveServer,
) -> None:
    # Each request creates before it keeps its key, so all but the first meet the name the first
    # took (a 409 of their own): each answers with the first's answer instead.
    named = dataclasses.replace(ROUTES[0], body={"definition": "noop", "name": "only-once"})
    answers = send_together(server, named, "together-named")
    assert [a.status_code for a in answers] == [201] * PARALLEL, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert len([a for a in answers if "idempotent-replayed" not in a.headers]) == 1
    assert count_jobs(server) == 1


def test_keys_belong_to_a_project_its_tokens_and_a_route(server: LiveServer) -> None:
    for project in ("alpha", "beta"):
        assert server.http.post("/v1/projects", json={"name": project}).status_code == 201
        server.register(NOOP, project=project)
    token = server.http.post(
        "/v1/tokens", json={"name": "alpha-writer", "role": "write", "project": "alpha"}
    )
    assert token.status_code == 201, token.text
    alpha = httpx.Client(base_url=server.url, headers=bearer(token.json()["token"]), timeout=30)
    body = {"definition": "noop"}

    in_default = server.http.post(JOBS, json=body, headers=keyed("shared"))
    in_alpha = alpha.post("/v1/projects/alpha/jobs", json=body, headers=keyed("shared"))
    assert (in_default.status_code, in_alpha.status_code) == (201, 201), in_alpha.text
    # Another project's key is not this one's: a job of its own, no replay.
    assert "idempotent-replayed" not in in_alpha.headers
    assert in_alpha.json()["id"] != in_default.json()["id"]
    # A token of alpha cannot use beta's key, nor get its answer.
    in_beta = server.http.post("/v1/projects/beta/jobs", json=body, headers=keyed("beta-key"))
    assert in_beta.status_code == 201
    for path in ("/v1/projects/beta/jobs", "/v1/projects/default/jobs"):
        refused = alpha.post(path, json=body, headers=keyed("beta-key"))
        assert refused.status_code == 404, refused.text
        assert in_beta.json()["id"] not in refused.text
    daestro = {"job_definition": "beta::noop:1", "job_queue": "beta::default"}
    assert alpha.post("/v1/client/job", json=daestro, headers=keyed("x")).status_code == 404
    assert (count_jobs(server, "alpha"), count_jobs(server, "beta")) == (1, 1)
    # A route's key is not another route's: the same key makes a schedule.
    schedule = {"name": "shared", "cron": "0 2 * * *", "target": {"job": {"definition": "noop"}}}
    made = server.http.post(SCHEDULES, json=schedule, headers=keyed("shared"))
    assert made.status_code == 201, made.text
    # Daestro's jobs are in the native project too, but on a route of their own.
    daestro = {"job_definition": "default::noop:1", "job_queue": "default::default"}
    answer = server.http.post("/v1/client/job", json=daestro, headers=keyed("shared"))
    assert answer.status_code == 202 and "idempotent-replayed" not in answer.headers
    alpha.close()


def test_a_refused_request_keeps_no_key_and_its_key_serves_the_next(server: LiveServer) -> None:
    missing = server.http.post(JOBS, json={"definition": "nope"}, headers=keyed("k1"))
    assert missing.status_code == 404, missing.text
    named = {"definition": "noop", "name": "only-one"}
    assert server.http.post(JOBS, json=named).status_code == 201
    taken = server.http.post(JOBS, json=named, headers=keyed("k2"))
    assert taken.status_code == 409, taken.text
    # Refused, neither request kept its key: no row is left.
    assert key_rows(server) == []
    for key in ("k1", "k2"):
        made = server.http.post(JOBS, json={"definition": "noop"}, headers=keyed(key))
        assert made.status_code == 201, made.text
    assert count_jobs(server) == 3
    assert [row.status_code for row in key_rows(server)] == [201, 201]


def test_a_kept_answer_holds_no_secret_value(server: LiveServer) -> None:
    job = server.http.post(
        JOBS,
        json={"definition": "noop", "secret_env": {"API_TOKEN": SECRET}},
        headers=keyed("with-secret"),
    )
    assert job.status_code == 201, job.text
    assert job.json()["secret_env"] == {"API_TOKEN": "***"}
    quedup = {
        "method": "POST",
        "name": "with-credentials",
        "url": HOOK,
        "schedule": "0 2 * * *",
        "headers": {"Authorization": f"Bearer {SECRET}"},
    }
    assert server.http.post("/jobs", json=quedup, headers=keyed("q")).status_code == 200
    rows = key_rows(server)
    assert len(rows) == 2
    for row in rows:
        stored = f"{row.response_body} {row.response_headers} {row.fingerprint}"
        assert SECRET not in stored
        assert "***" in stored


def age_keys(server: LiveServer, by: timedelta) -> None:
    """Make every key row ``by`` older, as if that time had passed."""
    with server.services.db.transaction() as session:
        for row in session.exec(select(IdempotencyKey)).all():
            row.create_time = row.create_time - by
            session.add(row)


def test_an_expired_key_is_free_again_and_retention_deletes_it(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False, idempotency_ttl="1h")
    server.register(NOOP)
    first = server.http.post(JOBS, json={"definition": "noop"}, headers=keyed("daily"))
    assert first.status_code == 201
    age_keys(server, timedelta(minutes=59))
    kept = server.http.post(
        JOBS, json={"definition": "noop", "priority": 1}, headers=keyed("daily")
    )
    assert kept.status_code == 422, kept.text

    # Past ORCH_IDEMPOTENCY_TTL: the key is free, even for another request, before any pruning.
    age_keys(server, timedelta(minutes=2))
    reused = server.http.post(
        JOBS, json={"definition": "noop", "priority": 1}, headers=keyed("daily")
    )
    assert reused.status_code == 201, reused.text
    assert "idempotent-replayed" not in reused.headers
    assert reused.json()["id"] != first.json()["id"]
    assert count_jobs(server) == 2
    (row,) = key_rows(server)
    assert row.status_code == 201 and json.loads(row.response_body or "")["priority"] == 1

    # Retention deletes expired keys, and only those.
    fresh = server.http.post(JOBS, json={"definition": "noop"}, headers=keyed("fresh"))
    assert fresh.status_code == 201
    keep = Retention.from_settings(server.services.settings)
    later = utcnow() + timedelta(minutes=61)
    with server.services.db.read() as session:
        assert retention.expired(session, keep, later).idempotency_keys == 2
    with server.services.db.transaction() as session:
        removed = retention.collect(session, keep, utcnow() + timedelta(minutes=30), 500)
    assert removed.idempotency_keys == 0 and len(key_rows(server)) == 2
    with server.services.db.transaction() as session:
        removed = retention.collect(session, keep, later, 500)
    assert removed.idempotency_keys == 2
    assert key_rows(server) == []
    # And the key serves a new request.
    again = server.http.post(JOBS, json={"definition": "noop"}, headers=keyed("daily"))
    assert again.status_code == 201 and "idempotent-replayed" not in again.headers
    assert count_jobs(server) == 4
