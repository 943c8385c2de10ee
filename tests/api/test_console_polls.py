"""The console's live fragments answer an unchanged poll with 304 (the browser's ETag sent
back while no job moved) and a changed one with the new fragment; a tag never carries over to
another session. Both databases."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from orchestrator.api.console.freshness import MARK_SECONDS
from tests.conftest import TEST_IMAGE, LiveServer, admin_token

pytestmark = pytest.mark.docker


def signed_in(server: LiveServer) -> httpx.Client:
    """A client with a console session, as a browser has after signing in."""
    client = httpx.Client(base_url=server.url, timeout=30)
    form = client.get("/ui/signin")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    answer = client.post(
        "/ui/signin",
        data={"token": admin_token(server.settings), "then": "/ui/jobs", "csrf": csrf.group(1)},
    )
    assert answer.status_code == 303, answer.text
    return client


def poll(client: httpx.Client, path: str, tag: str | None) -> httpx.Response:
    headers = {"HX-Request": "true", **({"If-None-Match": tag} if tag else {})}
    return client.get(path, headers=headers)


def test_an_unchanged_poll_is_a_304_and_a_job_moving_makes_it_a_200(server: LiveServer) -> None:
    server.register({"name": "idle", "image": TEST_IMAGE, "command": ["true"]})
    created = server.http.post("/v1/projects/default/queues", json={"name": "held", "paused": True})
    assert created.status_code == 201, created.text
    job = server.submit(definition="idle", queue="held")
    rows, live = "/ui/jobs/rows?project=default", f"/ui/projects/default/jobs/{job['id']}/live"
    browser, other = signed_in(server), signed_in(server)
    try:
        first = {path: poll(browser, path, None) for path in (rows, live)}
        for path, answer in first.items():
            assert answer.status_code == 200 and answer.headers["etag"]
            assert "private" in answer.headers["cache-control"]
            again = poll(browser, path, answer.headers["etag"])
            assert again.status_code == 304 and again.content == b""
            # Another session's copy is not this one's.
            assert poll(other, path, answer.headers["etag"]).status_code == 200

        cancelled = server.http.post(f"/v1/projects/default/jobs/{job['id']}/cancel")
        assert cancelled.status_code == 200, cancelled.text
        time.sleep(MARK_SECONDS * 2)  # the process reads the newest event at most this often
        for path, answer in first.items():
            changed = poll(browser, path, answer.headers["etag"])
            assert changed.status_code == 200 and "cancelled" in changed.text
            assert changed.headers["etag"] != answer.headers["etag"]
    finally:
        browser.close()
        other.close()
