"""Retention over the API, with a live server and real containers: deleting one finished job,
a project's own retention (admin only, checked like every other field), and the server's
background collection deleting a finished job once its retention has passed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from ..conftest import TEST_IMAGE, LiveServer, bearer, wait_for

JOBS = "/v1/projects/default/jobs"


def sh(name: str, script: str) -> dict[str, Any]:
    return {"name": name, "image": TEST_IMAGE, "command": ["sh", "-c", script]}


def token(server: LiveServer, role: str, project: str | None = "default") -> httpx.Client:
    created = server.http.post("/v1/tokens", json={"name": role, "role": role, "project": project})
    assert created.status_code == 201, created.text
    return httpx.Client(base_url=server.url, timeout=30, headers=bearer(created.json()["token"]))


def test_a_finished_job_is_deleted_with_its_log_and_an_unfinished_one_is_refused(
    server: LiveServer,
) -> None:
    server.register(sh("talk", "echo said-it"))
    server.register(sh("nap", "sleep 30"))
    done = server.wait_job(server.submit(definition="talk")["id"])
    assert "said-it" in server.logs(done["id"])
    running = server.wait_job(server.submit(definition="nap")["id"], {"running"})

    refused = server.http.delete(f"{JOBS}/{running['id']}")
    assert refused.status_code == 409, refused.text
    assert "cancel it first" in refused.json()["message"]
    with token(server, "read") as reader:
        assert reader.delete(f"{JOBS}/{done['id']}").status_code == 403
    assert server.http.delete(f"{JOBS}/no-such-job").status_code == 404

    deleted = server.http.delete(f"{JOBS}/{done['id']}")
    assert deleted.status_code == 204, deleted.text
    assert server.http.get(f"{JOBS}/{done['id']}").status_code == 404
    assert server.http.get(f"{JOBS}/{done['id']}/logs").status_code == 404
    assert server.http.delete(f"{JOBS}/{done['id']}").status_code == 404
    trail = server.http.get("/v1/projects/default/audit").json()["items"]
    assert [e["resource"] for e in trail if e["action"] == "job_deleted"] == [f"job/{done['id']}"]
    assert server.http.post(f"{JOBS}/{running['id']}/cancel").status_code == 200


def test_a_projects_retention_is_set_by_an_admin_and_checked_like_any_field(
    server: LiveServer,
) -> None:
    assert server.http.get("/v1/projects/default").json()["retention"] is None
    changed = server.http.patch("/v1/projects/default", json={"retention": "7d"})
    assert changed.status_code == 200, changed.text
    assert changed.json()["retention"] == 7 * 86400
    assert changed.json()["description"] == "The default project"

    for bad in ("soon", -1, "4000d", True):
        refused = server.http.patch("/v1/projects/default", json={"retention": bad})
        assert refused.status_code == 400, refused.text
        assert refused.json()["field"] == "retention", refused.text
    with token(server, "write") as writer:
        assert writer.patch("/v1/projects/default", json={"retention": "1s"}).status_code == 403
    assert server.http.patch("/v1/projects/nowhere", json={"retention": 0}).status_code == 404

    kept = server.http.patch("/v1/projects/default", json={"retention": 0})
    assert kept.json()["retention"] == 0
    reset = server.http.patch("/v1/projects/default", json={"retention": None})
    assert reset.json()["retention"] is None
    actions = [e["action"] for e in server.http.get("/v1/projects/default/audit").json()["items"]]
    assert actions.count("project_updated") == 3


def test_the_server_collects_a_finished_job_once_its_retention_has_passed(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(retention=2.0, gc_interval=0.2)
    server.register(sh("brief", "echo brief"))
    server.register(sh("nap", "sleep 30"))
    waiting = server.wait_job(server.submit(definition="nap")["id"], {"running"})
    done = server.wait_job(server.submit(definition="brief")["id"])
    assert done["status"] == "succeeded"

    def gone() -> bool:
        return server.http.get(f"{JOBS}/{done['id']}").status_code == 404

    wait_for(gone, timeout=30)
    # A job that still runs is never collected, however long it has been there.
    assert server.job(waiting["id"])["status"] == "running"
    health = server.http.get("/healthz").json()
    assert health["loops"]["retention"] == "running"
