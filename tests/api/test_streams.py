"""Live streams (log follows, event streams) that scale: one database reader per job however
many follow it, resumes without a gap or a duplicate, streams that end when their token may no
longer read, and a cap on each token's open streams."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import sqlalchemy as sa

from orchestrator.storage.models import Token
from orchestrator.wakeups.topics import job_topic
from tests.conftest import TEST_IMAGE, LiveServer, bearer, wait_for

FOLLOWERS = 50
LINES = 40
# Far longer than any stream here should take to end: a stream still open then is a failure.
READ_TIMEOUT = 20.0


def sh(script: str, **spec: Any) -> dict[str, Any]:
    """A definition running ``script`` with busybox sh."""
    return {"image": TEST_IMAGE, "command": ["sh", "-c", script], **spec}


def numbered(count: int) -> str:
    return "".join(f"line {i}\n" for i in range(1, count + 1))


class Follower(threading.Thread):
    """Reads one stream to its end in a thread; ``text`` is what it received."""

    def __init__(self, server: LiveServer, path: str, **options: Any) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.path = path
        self.options = options
        self.status = 0
        self.text = ""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with (
                httpx.Client(base_url=self.server.url, timeout=READ_TIMEOUT) as client,
                client.stream("GET", self.path, **self.options) as response,
            ):
                self.status = response.status_code
                for chunk in response.iter_text():
                    self.text += chunk  # as it comes: a test may wait for a line
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self) -> str:
        """Wait for the stream's end; what it received."""
        self.join(READ_TIMEOUT * 2)
        assert not self.is_alive(), "the stream did not end"
        assert self.error is None, repr(self.error)
        assert self.status == 200, self.status
        return self.text


def sse_events(text: str) -> list[dict[str, Any]]:
    """The events of a server-sent event stream (comments left out)."""
    events = []
    for block in text.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if line[:1] != ":")
        if fields:
            events.append({"id": int(fields["id"]), "event": fields["event"]})
    return events


@contextmanager
def counting_log_reads(server: LiveServer) -> Iterator[list[int]]:
    """Count the statements of the server's process that read ``job_logs`` (a one-item list)."""
    count = [0]

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "FROM job_logs" in statement:
            count[0] += 1

    db = server.services.db
    engines = [db.write_engine]
    if db.read_engine.pool is not db.write_engine.pool:
        engines.append(db.read_engine)
    for engine in engines:
        sa.event.listen(engine, "before_cursor_execute", seen)
    try:
        yield count
    finally:
        for engine in engines:
            sa.event.remove(engine, "before_cursor_execute", seen)


def paused_queue(server: LiveServer, name: str) -> None:
    created = server.http.post("/v1/projects/default/queues", json={"name": name, "paused": True})
    assert created.status_code == 201, created.text


def resume(server: LiveServer, name: str) -> None:
    resumed = server.http.patch(f"/v1/projects/default/queues/{name}", json={"paused": False})
    assert resumed.status_code == 200, resumed.text


def test_many_followers_get_every_line_once_from_one_read_per_wake_up(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(max_streams_per_token=FOLLOWERS)
    server.register(
        sh(f"for i in $(seq 1 {LINES}); do echo line $i; sleep 0.05; done", name="ticker")
    )
    paused_queue(server, "held")
    job = server.submit(definition="ticker", queue="held")
    path = f"/v1/projects/default/jobs/{job['id']}/logs"
    headers = dict(server.http.headers)
    followers = [
        Follower(server, path, params={"follow": "true"}, headers=headers) for _ in range(FOLLOWERS)
    ]
    for follower in followers:
        follower.start()
    streams = server.services.streams
    wait_for(lambda: streams.followers("logs", "default", job["id"]) == FOLLOWERS)
    hub = server.services.hub
    topic = job_topic(job["id"])
    with counting_log_reads(server) as reads:
        before = hub.version(topic)
        resume(server, "held")
        texts = [follower.finish() for follower in followers]
        wake_ups = hub.version(topic) - before
    assert server.job(job["id"])["status"] == "succeeded"
    for text in texts:
        assert text == numbered(LINES)
    # One read per wake-up (plus a few polls), where each follower reading for itself would
    # have made FOLLOWERS times as many.
    assert wake_ups >= 5
    assert reads[0] <= wake_ups + 5, (reads[0], wake_ups)
    # The last follower gone, no reader is left.
    wait_for(lambda: not streams.feeds.feeds)


def test_followers_joining_a_live_job_miss_nothing_and_repeat_nothing(
    server: LiveServer,
) -> None:
    script = (
        "echo attempt $ORCH_ATTEMPT; for i in 1 2 3 4 5; do echo tick $i; sleep 0.1; done; exit 1"
    )
    server.register(sh(script, name="retried", retry={"attempts": 3, "backoff": "100ms"}))
    job = server.submit(definition="retried")
    base = f"/v1/projects/default/jobs/{job['id']}"
    headers = dict(server.http.headers)
    first_events = Follower(server, f"{base}/stream", headers=headers)
    first_logs = Follower(server, f"{base}/logs", params={"follow": "true"}, headers=headers)
    first_events.start()
    first_logs.start()
    # Later followers join the feeds while the job runs: from the start, and resuming after
    # each event the job has so far.
    server.wait_job(job["id"], {"running"})
    wait_for(lambda: streams_ready(server, job["id"]))
    seen = [event["id"] for event in server.events(job["id"])]
    joiners = [
        Follower(server, f"{base}/stream", headers={**headers, "Last-Event-ID": str(after)})
        for after in [0, *seen]
    ]
    late_logs = [
        Follower(server, f"{base}/logs", params={"follow": "true"}, headers=headers),
        Follower(server, f"{base}/logs", params={"follow": "true", "attempt": 2}, headers=headers),
    ]
    for follower in [*joiners, *late_logs]:
        follower.start()

    everything = sse_events(first_events.finish())
    assert everything[-1]["event"] == "failed"
    assert [e["id"] for e in everything] == [e["id"] for e in server.events(job["id"])]
    for after, joiner in zip([0, *seen], joiners, strict=True):
        assert sse_events(joiner.finish()) == [e for e in everything if e["id"] > after]
    log = server.logs(job["id"])
    assert log.count("tick 5") == 3
    assert first_logs.finish() == log
    assert late_logs[0].finish() == log
    attempt_2 = server.http.get(f"{base}/logs", params={"attempt": 2}).text
    assert attempt_2.startswith("attempt 2\n")
    assert late_logs[1].finish() == attempt_2


def streams_ready(server: LiveServer, job_id: str) -> bool:
    streams = server.services.streams
    return bool(
        streams.followers("events", "default", job_id)
        and streams.followers("logs", "default", job_id)
    )


def make_token(server: LiveServer, role: str = "read", project: str = "default") -> dict[str, Any]:
    response = server.http.post(
        "/v1/tokens", json={"name": f"{role}-streams", "role": role, "project": project}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def endless_job(server: LiveServer) -> dict[str, Any]:
    script = "trap 'exit 0' TERM; while true; do echo tick; sleep 0.2; done"
    server.register(sh(script, name="endless"))
    job = server.submit(definition="endless")
    server.wait_job(job["id"], {"running"})
    return job


def open_streams(server: LiveServer, job_id: str, token: str) -> list[Follower]:
    """A log follow and an event stream of the job with ``token``, both reading."""
    base = f"/v1/projects/default/jobs/{job_id}"
    followers = [
        Follower(server, f"{base}/logs", params={"follow": "true"}, headers=bearer(token)),
        Follower(server, f"{base}/stream", headers=bearer(token)),
    ]
    for follower in followers:
        follower.start()
    wait_for(lambda: streams_ready(server, job_id))
    return followers


def test_streams_end_when_their_token_is_revoked(server: LiveServer) -> None:
    job = endless_job(server)
    token = make_token(server)
    logs, events = open_streams(server, job["id"], token["token"])
    guard = server.services.streams.guard
    assert guard.held(token["id"]) == 2
    # The log stream has delivered a line (the job's first flush may come after the join).
    wait_for(lambda: "tick\n" in logs.text)

    revoked = server.http.delete(f"/v1/tokens/{token['id']}")
    assert revoked.status_code == 200, revoked.text
    assert "tick\n" in logs.finish()
    text = events.finish()
    assert sse_events(text)[-1]["event"] == "started"
    assert text.endswith(
        ": the token was revoked or no longer sees this project; the stream ends\n\n"
    )
    wait_for(lambda: guard.held(token["id"]) == 0)
    assert server.job(job["id"])["status"] == "running"
    again = server.http.get(
        f"/v1/projects/default/jobs/{job['id']}/stream", headers=bearer(token["token"])
    )
    assert again.status_code == 401


def test_streams_end_when_their_token_no_longer_sees_the_project(server: LiveServer) -> None:
    job = endless_job(server)
    created = server.http.post("/v1/projects", json={"name": "elsewhere"})
    assert created.status_code == 201, created.text
    token = make_token(server)
    logs, events = open_streams(server, job["id"], token["token"])
    wait_for(lambda: "tick\n" in logs.text)
    # Tokens cannot be edited over the API: the row is changed as an edit would change it, and
    # the periodic check (no revoke wakes it) ends the streams.
    checks = server.services.streams.guard.checks
    with server.services.db.transaction() as session:
        row = session.get(Token, token["id"])
        assert row is not None
        row.project = "elsewhere"
        session.add(row)
    assert "tick\n" in logs.finish()
    assert events.finish().endswith("the stream ends\n\n")
    assert server.services.streams.guard.checks > checks


def test_a_token_over_its_stream_cap_gets_429_until_a_stream_closes(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(max_streams_per_token=2)
    job = endless_job(server)
    token = make_token(server)
    url = f"{server.url}/v1/projects/default/jobs/{job['id']}/stream"
    guard = server.services.streams.guard
    with httpx.Client(headers=bearer(token["token"]), timeout=READ_TIMEOUT) as client:
        with client.stream("GET", url) as first:
            assert first.status_code == 200
            with client.stream("GET", url.replace("/stream", "/logs?follow=true")) as second:
                assert second.status_code == 200
                refused = client.get(url)
                assert refused.status_code == 429, refused.text
                assert refused.headers["Retry-After"] == "5"
                body = refused.json()
                assert body["code"] == "too_many_requests"
                assert body["field"] == "token"
                assert "2 live streams" in body["message"]
                assert "ORCH_MAX_STREAMS_PER_TOKEN=2" in body["message"]
                # Another token has its own slots; a plain read is no stream.
                assert server.http.get(url.replace("/stream", "/logs")).status_code == 200
                with server.http.stream("GET", url) as admin:
                    assert admin.status_code == 200
                assert client.get(url.replace("/stream", "")).status_code == 200
        # Both closed by the client: their slots are free again.
        wait_for(lambda: guard.held(token["id"]) == 0)
        with client.stream("GET", url) as again, client.stream("GET", url) as twice:
            assert again.status_code == twice.status_code == 200
            lines = again.iter_lines()
            assert json.loads(next(line for line in lines if line.startswith("data: "))[6:])
    wait_for(lambda: guard.held(token["id"]) == 0)
