"""Per-project caps on schedules, queues, definitions (names, and versions of one) and tokens,
on a live server (SQLite and PostgreSQL): past each one a 409 ``limit_reached`` naming the
setting and the number, in the native API and in the drop-in APIs' own shapes; deleting (or
revoking) frees room; parallel creates at the edge create exactly the cap."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from ..conftest import TEST_IMAGE, LiveServer, admin_token, bearer

SALAD_QUEUES = "/api/public/organizations/acme-corp/projects/default/queues"


def schedule(name: str) -> dict[str, Any]:
    """A schedule body (an HTTP target: no definition needed)."""
    return {"name": name, "cron": "0 9 * * *", "target": {"http": {"url": "http://127.0.0.1:9/"}}}


def definition(name: str, command: str = "true") -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": [command]}


def token(role: str = "write", project: str | None = "default") -> dict[str, Any]:
    return {"name": f"{role}-token", "role": role, "project": project}


def assert_capped(response: httpx.Response, setting: str, number: int) -> None:
    """A 409 ``limit_reached`` naming ``setting`` and the cap ``number``."""
    assert response.status_code == 409, response.text
    body = response.json()
    assert body["code"] == "limit_reached"
    assert setting in body["message"]
    assert f"({number})" in body["message"]


def test_queues_cap(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_queues_per_project=3)
    # The project's default queue counts: two more fit.
    for name in ("one", "two"):
        assert server.http.post("/v1/projects/default/queues", json={"name": name}).is_success
    refused = server.http.post("/v1/projects/default/queues", json={"name": "three"})
    assert_capped(refused, "ORCH_MAX_QUEUES_PER_PROJECT", 3)
    assert "has 3 queues" in refused.json()["message"]
    # Another project has room of its own.
    assert server.http.post("/v1/projects", json={"name": "other"}).is_success
    assert server.http.post("/v1/projects/other/queues", json={"name": "one"}).is_success
    # Deleting one frees room.
    assert server.http.delete("/v1/projects/default/queues/one").status_code == 204
    assert server.http.post("/v1/projects/default/queues", json={"name": "three"}).is_success


def test_queues_cap_in_salads_shape(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_queues_per_project=2)
    assert server.http.post(SALAD_QUEUES, json={"name": "renders"}).status_code == 201
    refused = server.http.post(SALAD_QUEUES, json={"name": "more"})
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["status"] == 409
    assert "ORCH_MAX_QUEUES_PER_PROJECT allows (2)" in problem["detail"]


def test_schedules_cap(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_schedules_per_project=2)
    for name in ("s-a", "s-b"):
        assert server.http.post("/v1/projects/default/schedules", json=schedule(name)).is_success
    refused = server.http.post("/v1/projects/default/schedules", json=schedule("s-c"))
    assert_capped(refused, "ORCH_MAX_SCHEDULES_PER_PROJECT", 2)
    # A Quedup job is a schedule of the default project: refused in Quedup's shape.
    quedup = server.http.post(
        "/jobs",
        json={
            "method": "GET",
            "name": "Ping",
            "url": "http://127.0.0.1:9/",
            "schedule": "* * * * *",
        },
    )
    assert quedup.status_code == 409
    assert set(quedup.json()) == {"error"}
    assert "ORCH_MAX_SCHEDULES_PER_PROJECT allows (2)" in quedup.json()["error"]
    assert server.http.delete("/v1/projects/default/schedules/s-a").status_code == 204
    assert server.http.post("/v1/projects/default/schedules", json=schedule("s-c")).is_success


def test_definitions_caps(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_definitions_per_project=2, max_versions_per_definition=2)
    url = "/v1/projects/default/definitions"
    server.register(definition("first"))
    server.register(definition("second"))
    assert_capped(
        server.http.post(url, json=definition("third")), "ORCH_MAX_DEFINITIONS_PER_PROJECT", 2
    )
    # In a batch too: all or none, the one at fault named.
    batch = server.http.post(
        f"{url}:batch", json={"definitions": [definition("first", "false"), definition("third")]}
    )
    assert_capped(batch, "ORCH_MAX_DEFINITIONS_PER_PROJECT", 2)
    assert batch.json()["message"].startswith("definitions[1]: ")
    # A new version of a name in the project is not a new definition...
    assert server.http.post(url, json=definition("first", "false")).status_code == 201
    # ...but a name holds only so many versions.
    refused = server.http.post(url, json=definition("first", "date"))
    assert_capped(refused, "ORCH_MAX_VERSIONS_PER_DEFINITION", 2)
    assert "definition 'first' has 2 versions" in refused.json()["message"]
    # Registering the latest version again is a no-op, never refused.
    again = server.http.post(url, json=definition("first", "false"))
    assert again.status_code == 200
    assert again.json()["version"] == 2
    versions = server.http.get(f"{url}/first/versions").json()["items"]
    assert [v["version"] for v in versions] == [1, 2]


def test_tokens_cap(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_tokens_per_project=2)
    created = [server.http.post("/v1/tokens", json=token()) for _ in range(2)]
    assert all(r.status_code == 201 for r in created)
    assert_capped(server.http.post("/v1/tokens", json=token()), "ORCH_MAX_TOKENS_PER_PROJECT", 2)
    # Admin tokens are one group of their own: the first start's and one more.
    assert server.http.post("/v1/tokens", json=token("admin", None)).status_code == 201
    admin = server.http.post("/v1/tokens", json=token("admin", None))
    assert_capped(admin, "ORCH_MAX_TOKENS_PER_PROJECT", 2)
    assert "the admin role has 2 active tokens" in admin.json()["message"]
    # Revoking frees room.
    revoked = server.http.delete(f"/v1/tokens/{created[0].json()['id']}")
    assert revoked.status_code == 200, revoked.text
    assert server.http.post("/v1/tokens", json=token()).status_code == 201


def test_zero_leaves_a_cap_unbounded(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(max_queues_per_project=0)
    for index in range(5):
        response = server.http.post("/v1/projects/default/queues", json={"name": f"q{index}"})
        assert response.status_code == 201, response.text


# What each parallel race creates: (cap setting, count already there, path, body of the nth).
RACES: dict[str, tuple[str, int, str, Callable[[int], dict[str, Any]]]] = {
    "queues": (
        "max_queues_per_project",
        1,
        "/v1/projects/default/queues",
        lambda n: {"name": f"q{n}"},
    ),
    "schedules": (
        "max_schedules_per_project",
        0,
        "/v1/projects/default/schedules",
        lambda n: schedule(f"s{n}"),
    ),
    "definitions": (
        "max_definitions_per_project",
        0,
        "/v1/projects/default/definitions",
        lambda n: definition(f"d{n}"),
    ),
    "versions": (
        "max_versions_per_definition",
        0,
        "/v1/projects/default/definitions",
        lambda n: definition("same", f"echo-{n}"),
    ),
    "tokens": ("max_tokens_per_project", 0, "/v1/tokens", lambda n: token()),
}
CAP = 4
CLIENTS = 12


@pytest.mark.parametrize("kind", sorted(RACES))
def test_parallel_creates_at_the_edge_create_exactly_the_cap(
    make_server: Callable[..., LiveServer], kind: str
) -> None:
    setting, already, path, body = RACES[kind]
    server = make_server(**{setting: CAP})
    headers = bearer(admin_token(server.settings))
    clients = [
        httpx.Client(base_url=server.url, timeout=60, headers=headers) for _ in range(CLIENTS)
    ]
    for client in clients:  # each connected before the race, so the requests start together
        assert client.get("/healthz").status_code == 200
    start = threading.Barrier(CLIENTS)
    statuses: list[int] = []

    def create(index: int) -> None:
        start.wait()
        statuses.append(clients[index].post(path, json=body(index)).status_code)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    for client in clients:
        client.close()
    assert sorted(statuses) == sorted([201] * (CAP - already) + [409] * (CLIENTS - CAP + already))
