"""Which stream each line of a job's log came from: recorded by the runner, given by
``GET .../logs?format=json`` (stored and followed) while the text form stays as it was, with
secrets masked in both streams. Both databases."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.test_streams import Follower, sh
from tests.conftest import LiveServer, admin_token, bearer, wait_for

pytestmark = pytest.mark.docker

SECRET = "stream-s3cret-value"
# Each stream's lines in their order; across streams Docker's order is not kept exactly (its two
# copiers race), so the pauses keep the lines apart in time and the test reads each stream on
# its own.
SCRIPT = (
    "sleep 1; echo out 1; echo err 1 >&2; sleep 0.3; echo out 2; "
    'echo "token $SECRET" >&2; sleep 0.3; printf "no newline" >&2'
)
STDOUT = ["out 1\n", "out 2\n"]
STDERR = ["err 1\n", "token ***\n", "no newline"]


def by_stream(lines: list[dict[str, Any]]) -> dict[str | None, list[str]]:
    kept: dict[str | None, list[str]] = {}
    for line in lines:
        assert set(line) == {"id", "attempt", "stream", "text"} and line["attempt"] == 1
        kept.setdefault(line["stream"], []).append(line["text"])
    return kept


def parsed(body: str) -> list[dict[str, Any]]:
    assert body.endswith("\n")
    return [json.loads(line) for line in body.splitlines()]


def test_each_line_names_its_stream_stored_and_followed_and_text_is_unchanged(
    server: LiveServer,
) -> None:
    server.register(sh(SCRIPT, name="both-streams"))
    job = server.submit(definition="both-streams", secret_env={"SECRET": SECRET})
    path = f"/v1/projects/default/jobs/{job['id']}/logs"
    follower = Follower(
        server,
        path,
        params={"follow": "true", "format": "json"},
        headers=bearer(admin_token(server.settings)),
    )
    follower.start()
    wait_for(lambda: server.services.streams.followers("logs", "default", job["id"]) == 1)
    assert server.wait_job(job["id"])["status"] == "succeeded"
    followed = follower.finish()

    response = server.http.get(path, params={"format": "json"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/x-ndjson")
    stored = parsed(response.text)
    assert by_stream(stored) == {"stdout": STDOUT, "stderr": STDERR}
    assert parsed(followed) == stored
    assert SECRET not in response.text and SECRET not in followed

    text = server.http.get(path)
    assert text.headers["content-type"].startswith("text/plain")
    assert sorted(text.text.splitlines()) == sorted(line.rstrip("\n") for line in STDOUT + STDERR)


def test_a_format_the_logs_do_not_have_is_a_400_naming_it(server: LiveServer) -> None:
    server.register(sh("echo hi", name="hi"))
    job = server.submit(definition="hi")
    response = server.http.get(
        f"/v1/projects/default/jobs/{job['id']}/logs", params={"format": "xml"}
    )
    assert response.status_code == 400 and "format" in response.text
