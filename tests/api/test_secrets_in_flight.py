"""Secrets in flight: a secret value reaches the container as its environment and nowhere else.

Each test submits its own canary as a secret value and then looks for it, as raw bytes, where it
must never be: API responses (errors included), stored logs, events, job fields, the container's
labels and name, CLI output, the server's own log, and the webhook bodies a receiver gets.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.config import Settings
from orchestrator.docker.log_stream import STDOUT, LogFrame
from orchestrator.runner.log_pump import LogPump

from ..conftest import (
    TERMINAL,
    TEST_IMAGE,
    LiveServer,
    bearer,
    containers_of,
    free_port,
    installation_of,
    remove_installation,
    wait_for,
)
from .test_webhooks import Receiver

JOBS = "/v1/projects/default/jobs"
# A registry that refuses connections at once, so a pull fails fast and offline (a local
# registry, which the policy must allow: LOCAL_REGISTRIES).
MISSING_IMAGE = "127.0.0.1:9/orch-absent:never"
LOCAL_REGISTRIES = {"policy_allow_local_registries": True}
# Keeps the container alive until it is stopped; SIGTERM ends it at once.
WAIT_FOR_STOP = "trap 'exit 143' TERM; sleep 300 & wait $!"
# A body limit small enough that a too-large body is cheap to send.
MAX_BODY_BYTES = 16_384


@pytest.fixture
def canary() -> str:
    """A fresh secret value: a unique hex core, with non-ASCII text so that its JSON-escaped
    form differs from its raw bytes."""
    return f"cnry-{uuid.uuid4().hex}-é✓"


def leak_forms(canary: str) -> list[bytes]:
    """Every byte string whose presence is a leak: the value raw and JSON-escaped, and each half
    of its core (a value masked only in part is leaked too)."""
    core = canary.split("-")[1]
    return [
        canary.encode(),
        json.dumps(canary)[1:-1].encode(),
        core[:16].encode(),
        core[16:].encode(),
    ]


def assert_absent(canary: str, where: str, data: bytes | str) -> None:
    """Fail, naming ``where``, if any form of ``canary`` is in ``data``."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    for form in leak_forms(canary):
        assert form not in raw, f"the secret leaked into {where}: {raw[:2000]!r}"


def sh(name: str, script: str, **spec: Any) -> dict[str, Any]:
    """A definition running ``script`` in busybox sh, wanting the secret ``API_TOKEN``."""
    return {
        "name": name,
        "image": TEST_IMAGE,
        "command": ["sh", "-c", script],
        "secrets": ["API_TOKEN"],
        **spec,
    }


def submit(
    http: httpx.Client, canary: str, definition: str, secret: str | None = None
) -> dict[str, Any]:
    """Submit ``definition`` with ``secret`` (default: the canary) as ``API_TOKEN``; the
    response must not carry the canary."""
    value = canary if secret is None else secret
    response = http.post(JOBS, json={"definition": definition, "secret_env": {"API_TOKEN": value}})
    assert response.status_code == 201, response.text
    assert_absent(canary, "the submit response", response.content)
    assert response.json()["secret_env"] == {"API_TOKEN": "***"}
    return dict(response.json())


def job_reads(http: httpx.Client, job_id: str) -> dict[str, bytes]:
    """Every stored read of one job, as the bytes the API sent."""
    base = f"{JOBS}/{job_id}"
    reads = {
        "the job": http.get(base),
        "the job list": http.get(JOBS),
        "the events": http.get(f"{base}/events"),
        "the logs": http.get(f"{base}/logs"),
        "the logs of attempt 1": http.get(f"{base}/logs", params={"attempt": 1}),
        "the logs, followed after the end": http.get(f"{base}/logs", params={"follow": "true"}),
        "the event stream, after the end": http.get(f"{base}/stream"),
    }
    for where, response in reads.items():
        assert response.status_code == 200, (where, response.text)
    return {where: response.content for where, response in reads.items()}


def assert_job_clean(http: httpx.Client, canary: str, job_id: str) -> None:
    for where, content in job_reads(http, job_id).items():
        assert_absent(canary, where, content)


# --- API responses ---------------------------------------------------------------------------


def read_stream(http: httpx.Client, url: str, **params: str) -> bytes:
    """A streamed response read to its end (it ends with the job)."""
    with http.stream("GET", url, params=params, timeout=60) as response:
        assert response.status_code == 200
        return b"".join(response.iter_bytes())


def test_api_responses_never_carry_the_secret(server: LiveServer, canary: str) -> None:
    script = (
        'echo "token=$API_TOKEN"; sleep 0.5; echo "again=$API_TOKEN" >&2; '
        'printf \'{"echo": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"'
    )
    server.register(sh("leaky", script))
    job = submit(server.http, canary, "leaky")
    url = f"{JOBS}/{job['id']}"
    # Both streams are opened while the job runs and read until it ends.
    with ThreadPoolExecutor(2) as pool:
        followed = pool.submit(read_stream, server.http, f"{url}/logs", follow="true")
        streamed = pool.submit(read_stream, server.http, f"{url}/stream")
        live = {"the followed logs": followed.result(), "the event stream": streamed.result()}
    assert b"event: succeeded" in live["the event stream"]
    assert sorted(live["the followed logs"].decode().splitlines()) == ["again=***", "token=***"]
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"echo": "***"}
    reads = {
        **live,
        **job_reads(server.http, job["id"]),
        "the jobs by status": server.http.get(JOBS, params={"status": "succeeded"}).content,
        "the queue": server.http.get("/v1/projects/default/queues/default").content,
        "the queues": server.http.get("/v1/projects/default/queues").content,
        "the definition": server.http.get("/v1/projects/default/definitions/leaky").content,
        "the definitions": server.http.get("/v1/projects/default/definitions").content,
        "the definition versions": server.http.get(
            "/v1/projects/default/definitions/leaky/versions"
        ).content,
        "the project": server.http.get("/v1/projects/default").content,
        "the audit trail": server.http.get("/v1/projects/default/audit").content,
        "the health": server.http.get("/healthz").content,
    }
    for where, content in reads.items():
        assert_absent(canary, where, content)


def bad_submissions(canary: str) -> list[tuple[str, int, dict[str, Any]]]:
    """(what is wrong, expected status, request) for submissions carrying the canary as a
    secret value, each refused for another reason."""
    secret = {"API_TOKEN": canary}

    def body(**fields: Any) -> dict[str, Any]:
        return {"json": {"definition": "leaky", "secret_env": secret, **fields}}

    def secrets(value: Any) -> dict[str, Any]:
        return {"json": {"definition": "leaky", "secret_env": value}}

    def raw(content: bytes, content_type: str = "application/json") -> dict[str, Any]:
        return {"content": content, "headers": {"Content-Type": content_type}}

    def raw_json(value: str, rest: str = "") -> dict[str, Any]:
        # JSON text the client library would refuse to write: ``value`` is spliced in as is.
        text = f'{{"definition": "leaky", "secret_env": {{"API_TOKEN": {value}}}{rest}'
        return raw(text.encode())

    def nested(depth: int) -> Any:
        value: Any = canary
        for _ in range(depth):
            value = [value]
        return value

    quoted = json.dumps(canary)  # ASCII JSON text of the value
    padding = "x" * MAX_BODY_BYTES
    too_large_in_chunks = iter([json.dumps({"secret_env": secret}).encode(), padding.encode()])
    form = f"API_TOKEN={canary}".encode()
    return [
        ("an unknown field", 400, body(bogus=1)),
        ("a priority that is not a number", 400, body(priority="high")),
        ("a timeout that is not a duration", 400, body(timeout="forever")),
        ("a schedule_at that is not a time", 400, body(schedule_at="yesterday")),
        ("a webhook that is not a URL", 400, body(webhook="not a url")),
        ("an env value that is an object", 400, body(env={"MODE": {"a": 1}})),
        ("a parameter value that is a list", 400, body(parameters={"x": [1]})),
        ("a name too long", 400, body(name="n" * 300)),
        ("input nested too deeply", 400, body(input=nested(100))),
        ("input with NaN", 400, raw_json(quoted, ', "input": NaN}')),
        ("a secret value that is an object", 400, secrets({"API_TOKEN": {"value": canary}})),
        ("a secret value that is a list", 400, secrets({"API_TOKEN": [canary, canary]})),
        ("a secret_env that is a list", 400, secrets([canary])),
        ("a secret_env that is text", 400, secrets(canary)),
        ("a secret name that is invalid", 400, secrets({"BAD-NAME": canary})),
        ("the secret pasted into its name", 400, secrets({f"API_TOKEN={canary}": ""})),
        ("a secret's name and value swapped", 400, secrets({canary: "API_TOKEN"})),
        ("a secret name that is empty", 400, secrets({"": canary})),
        ("a secret name that is reserved", 400, secrets({"ORCH_JOB_ID": canary})),
        ("a secret also given as env", 400, body(env={"API_TOKEN": "plain"})),
        ("a secret the definition needs is missing", 400, secrets({"OTHER": canary})),
        ("a secret value with NUL", 400, secrets({"API_TOKEN": canary + "\x00"})),
        ("a secret value with a lone surrogate", 400, raw_json(json.dumps(canary + "\ud800"), "}")),
        ("a definition name that is malformed", 400, body(definition="No Such!")),
        ("a definition that does not exist", 404, body(definition="absent")),
        ("a definition version that does not exist", 404, body(definition="leaky:99")),
        ("a missing parameter", 400, body(definition="needs-param")),
        ("a queue that does not exist", 404, body(queue="nowhere")),
        ("a project that does not exist", 404, {**body(), "url": "/v1/projects/nowhere/jobs"}),
        ("an unfinished job with the same name", 409, body(queue="parked", name="dup")),
        ("a body too large (Content-Length)", 413, body(padding=padding)),
        ("a body too large (chunked)", 413, {"content": too_large_in_chunks}),
        ("invalid JSON", 400, raw_json(quoted)),
        ("JSON with trailing text", 400, raw_json(quoted, f"}} {quoted}")),
        ("a body that is not UTF-8", 400, raw(canary.encode() + b"\xff")),
        ("a body that is not JSON", 400, raw(canary.encode(), "text/plain")),
        ("a form body", 400, raw(form, "application/x-www-form-urlencoded")),
        ("no token", 401, {**body(), "headers": {"Authorization": ""}}),
        ("the secret sent as a token", 401, {**body(), "headers": bearer(canary.split("-")[1])}),
        ("a method the path does not allow", 405, {**body(), "method": "PUT"}),
    ]


def prepare_refusals(http: httpx.Client) -> str:
    """What ``bad_submissions`` counts on: its definitions, and a paused queue holding an
    unfinished job named ``dup``; that job's id."""
    for spec in (sh("leaky", "echo never run"), sh("needs-param", "echo Param::x")):
        registered = http.post("/v1/projects/default/definitions", json=spec)
        assert registered.status_code == 201, registered.text
    created = http.post("/v1/projects/default/queues", json={"name": "parked", "paused": True})
    assert created.status_code == 201, created.text
    first = http.post(
        JOBS,
        json={
            "definition": "leaky",
            "queue": "parked",
            "name": "dup",
            "secret_env": {"API_TOKEN": "another value"},
        },
    )
    assert first.status_code == 201, first.text
    return str(first.json()["id"])


def refuse_all(http: httpx.Client, canary: str) -> None:
    """Send every bad submission; each is refused as expected without echoing the canary."""
    for what, status, request in bad_submissions(canary):
        request = dict(request)
        method = request.pop("method", "POST")
        url = request.pop("url", JOBS)
        response = http.request(method, url, **request)
        assert response.status_code == status, (what, response.text)
        assert set(response.json()) == {"code", "message", "field"}, (what, response.text)
        assert_absent(canary, f"the response to {what}", response.content)
        assert_absent(canary, f"the headers of the response to {what}", str(response.headers))


def test_error_responses_never_echo_the_secret(
    make_server: Callable[..., LiveServer], canary: str
) -> None:
    server = make_server(max_body_bytes=MAX_BODY_BYTES)
    first = prepare_refusals(server.http)
    refuse_all(server.http, canary)
    # Nothing was stored from any of them.
    assert [job["id"] for job in server.http.get(JOBS).json()["items"]] == [first]


def test_a_secret_given_as_a_number_is_not_echoed(server: LiveServer, canary: str) -> None:
    # A number is not a secret value (they are text); the refusal must not echo its digits.
    number = int(canary.split("-")[1][:15], 16)
    server.register(sh("leaky", "echo never run"))
    response = server.http.post(
        JOBS, json={"definition": "leaky", "secret_env": {"API_TOKEN": number}}
    )
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "secret_env.API_TOKEN"
    assert str(number).encode() not in response.content
    assert server.http.get(JOBS).json()["items"] == []


SCHEDULES = "/v1/projects/default/schedules"
# 1 to 3 characters: masked, every occurrence of them in a log or an error would be ***.
TOO_SHORT = ("x", "é✓", "ñ§¤")


def secret_paths() -> list[tuple[str, Callable[[str], dict[str, Any]], str]]:
    """(path, the body carrying a secret value, the field the refusal names) of each native
    request that takes one: a job, a schedule's job target, a schedule's HTTP target."""
    made = itertools.count()

    def job(value: str) -> dict[str, Any]:
        return {"definition": "leaky", "secret_env": {"API_TOKEN": value}}

    def schedule(target: dict[str, Any]) -> dict[str, Any]:
        return {"name": f"sched-{next(made)}", "cron": "@daily", "paused": True, "target": target}

    def http(value: str) -> dict[str, Any]:
        return {"url": "http://a.example/", "secret_headers": {"X-Api-Key": value}}

    return [
        (JOBS, job, "secret_env.API_TOKEN"),
        (SCHEDULES, lambda value: schedule({"job": job(value)}), "target.job.secret_env.API_TOKEN"),
        (
            SCHEDULES,
            lambda value: schedule({"http": http(value)}),
            "target.http.secret_headers.X-Api-Key",
        ),
    ]


def test_a_secret_too_short_to_mask_is_refused_on_every_path(
    make_server: Callable[..., LiveServer],
) -> None:
    server = make_server(runner_enabled=False)
    server.register(sh("leaky", "echo never run"))
    for path, body, field in secret_paths():
        for value in TOO_SHORT:
            response = server.http.post(path, json=body(value))
            assert response.status_code == 400, (path, value, response.text)
            refusal = response.json()
            assert (refusal["code"], refusal["field"]) == ("invalid_request", field), refusal
            # A job target's errors are worded "target.job: secret_env.API_TOKEN: ...".
            assert f"{field.removeprefix('target.job.')}: " in refusal["message"]
            assert "at least 4 characters" in refusal["message"]
            if len(value) > 1:
                assert value not in response.text
        accepted = server.http.post(path, json=body("ñ§¤x"))  # 4 characters
        assert accepted.status_code == 201, (path, accepted.text)
    # The default limit: 64 KiB.
    over = {"definition": "leaky", "secret_env": {"API_TOKEN": "a" * 65_537}}
    response = server.http.post(JOBS, json=over)
    assert response.status_code == 413, response.text
    assert "65536 bytes (ORCH_MAX_SECRET_BYTES)" in response.json()["message"]


def test_a_secret_over_the_size_limit_is_413(make_server: Callable[..., LiveServer]) -> None:
    server = make_server(runner_enabled=False, max_secret_bytes=64)
    server.register(sh("leaky", "echo never run"))
    for path, body, field in secret_paths():
        over = server.http.post(path, json=body("é" * 32 + "x"))  # 65 bytes of UTF-8
        assert over.status_code == 413, (path, over.text)
        refusal = over.json()
        assert (refusal["code"], refusal["field"]) == ("payload_too_large", field), refusal
        assert "64 bytes (ORCH_MAX_SECRET_BYTES)" in refusal["message"]
        assert "é" not in over.text
        at_limit = server.http.post(path, json=body("é" * 32))
        assert at_limit.status_code == 201, (path, at_limit.text)


# --- stored logs ---------------------------------------------------------------------------


# Docker's log driver passes on a line at its newline, or in 16 KiB pieces when it is longer.
DOCKER_LOG_CHUNK = 16_384


def test_stored_logs_mask_every_way_it_is_printed(server: LiveServer, canary: str) -> None:
    # The split points fall inside the core, so an unmasked part would show. Docker joins two
    # writes into one line; a line longer than its chunk comes in two pieces, cut ``offset``
    # characters into the value.
    # 39 and 42: inside "é" and "✓", which Docker then stores as one U+FFFD per byte.
    offsets = (1, 10, 21, 39, 42)
    long_lines = "; ".join(
        f'head -c {DOCKER_LOG_CHUNK - offset} /dev/zero | tr "\\0" x; echo "$T"'
        for offset in offsets
    )
    script = (
        'T="$API_TOKEN"; '
        'echo "whole=$T"; '
        'printf "split=%s" "${T:0:21}"; sleep 0.5; printf "%s\\n" "${T:21}"; '
        'echo "stderr=$T" >&2; sleep 0.5; '
        'echo "twice=$T $T"; '
        f"{long_lines}; "
        'printf "end=%s" "${T:0:13}"; sleep 0.5; printf "%s" "${T:13}"'
    )
    server.register(sh("printer", script))
    job = submit(server.http, canary, "printer")
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    logs = server.logs(job["id"])
    lines = logs.splitlines()
    # The last line, without a newline, is stored (and masked) even when Docker ends the
    # followed stream before it arrives.
    assert lines.pop() == "end=***"
    assert sorted(lines) == sorted(
        ["whole=***", "split=***", "stderr=***", "twice=*** ***"]
        + ["x" * (DOCKER_LOG_CHUNK - offset) + "***" for offset in offsets]
    )
    assert_job_clean(server.http, canary, job["id"])


def test_the_last_unterminated_line_is_masked(canary: str) -> None:
    # Output that ends without a newline, the value split across the last two chunks: the pump
    # masks what it holds when the stream ends.
    # Docker's frames: the pieces of an unfinished line share the time of its first piece.
    pieces = [
        LogFrame(STDOUT, 1, b"first line\n"),
        LogFrame(STDOUT, 2, f"end={canary[:13]}".encode()),
        LogFrame(STDOUT, 2, canary[13:].encode()),
    ]

    def logs(
        *, since: int | None, follow: bool, stream: int | None = None, tail: int | None = None
    ) -> Iterator[LogFrame]:
        return iter([f for f in pieces if stream in (None, f.stream) and f.time >= (since or 0)])

    pump = LogPump(logs, [canary])
    pump.start()
    pump.container_exited()
    assert pump.join(10)
    assert pump.take() == "first line\nend=***"


def test_a_multi_line_secret_is_masked_line_by_line(server: LiveServer, canary: str) -> None:
    # A PEM-like value: logs are masked a line at a time, so each of its lines is masked on its
    # own wherever it appears, and the whole value wherever it arrives in one piece.
    half = len("cnry-") + 16
    pem = f"-----BEGIN TEST KEY-----\n{canary[:half]}\n{canary[half:]}\n-----END TEST KEY-----\n"
    script = (
        'printf "%s" "$API_TOKEN"; '
        'echo "$API_TOKEN" | while read -r line; do echo "line: $line"; sleep 0.3; done; '
        'echo "$API_TOKEN" >&2; '
        'printf \'{"pem": "%s"}\' "$(echo "$API_TOKEN" | sed -n 2p)" > "$ORCH_OUTPUT"'
    )
    server.register(sh("pem", script))
    job = submit(server.http, canary, "pem", secret=pem)
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"pem": "***"}
    logs = server.logs(job["id"])
    assert logs.count("line: ***\n") == 4
    assert "TEST KEY" not in logs
    assert_job_clean(server.http, canary, job["id"])


def test_output_masks_the_secret_however_json_escapes_it(server: LiveServer, canary: str) -> None:
    # JSON may escape any character: "\u0063" is "c", "\u00E9" is "é". The decoded value counts.
    script = (
        'T="$API_TOKEN"; '
        'printf \'{"first": "\\u%04x%s", "%s": [1, {"k": "x %s y"}]}\' 99 "${T#c}" "$T" "$T" '
        '> "$ORCH_OUTPUT"'
    )
    server.register(sh("escaper", script))
    job = submit(server.http, canary, "escaper")
    done = server.wait_job(job["id"])
    assert done["status"] == "succeeded", done
    assert done["output"] == {"first": "***", "***": [1, {"k": "x *** y"}]}
    assert_job_clean(server.http, canary, job["id"])


def test_a_secret_at_the_cut_of_a_very_long_line_is_masked(server: LiveServer, canary: str) -> None:
    # The pump lets a line go once it holds more than 64 KiB of it: with Docker's 16 KiB pieces,
    # after the fifth, which here ends ten characters into the value.
    script = (
        f'T="$API_TOKEN"; head -c {5 * DOCKER_LOG_CHUNK - 10} /dev/zero | tr "\\0" x; '
        'echo "$T"; echo after'
    )
    server.register(sh("long-line", script))
    job = submit(server.http, canary, "long-line")
    assert server.wait_job(job["id"])["status"] == "succeeded"
    logs = server.logs(job["id"])
    assert logs.endswith("***\nafter\n")
    assert_absent(canary, "the stored logs", logs)


def test_a_secret_split_by_a_stderr_line_is_masked(server: LiveServer, canary: str) -> None:
    # Docker sends the first 16 KiB of the long stdout line, ten characters into the value,
    # then the stderr line, then the rest of the stdout line.
    script = (
        f'T="$API_TOKEN"; head -c {DOCKER_LOG_CHUNK - 10} /dev/zero | tr "\\0" x; '
        'printf "%s" "${T:0:21}"; sleep 0.5; echo noise >&2; sleep 0.5; printf "%s\\n" "${T:21}"'
    )
    server.register(sh("interleaved", script))
    job = submit(server.http, canary, "interleaved")
    assert server.wait_job(job["id"])["status"] == "succeeded"
    assert_absent(canary, "the stored logs", server.logs(job["id"]))


# --- events and job fields when things go wrong ----------------------------------------------

NUL_OUTPUT = 'printf \'{"v": "\\u0000 %s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"'
PRINT_FOREVER = 'while :; do echo "out=$API_TOKEN"; echo "err=$API_TOKEN" >&2; sleep 0.05; done'


def test_failure_timeout_and_cancel_while_printing_it(
    make_server: Callable[..., LiveServer], canary: str
) -> None:
    server = make_server(**LOCAL_REGISTRIES)
    fail_script = (
        'echo "out=$API_TOKEN"; echo "err=$API_TOKEN" >&2; '
        'printf \'{"partial": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"; exit 3'
    )
    server.register(sh("fails", fail_script, retry={"attempts": 2, "backoff": "100ms"}))
    server.register(sh("bad-output", 'printf "not json %s" "$API_TOKEN" > "$ORCH_OUTPUT"'))
    server.register(sh("times-out", PRINT_FOREVER, timeout="1s"))
    server.register(sh("cancelled", PRINT_FOREVER))
    server.register(sh("no-image", "echo never", image=MISSING_IMAGE))
    server.register(sh("no-user", 'echo "$API_TOKEN"', user="no-such-user"))
    ids = {
        name: submit(server.http, canary, name)["id"]
        for name in ("fails", "bad-output", "times-out", "cancelled", "no-image", "no-user")
    }
    wait_for(lambda: "out=***" in server.logs(ids["cancelled"]))
    cancel = server.http.post(f"{JOBS}/{ids['cancelled']}/cancel")
    assert cancel.status_code == 200, cancel.text
    assert_absent(canary, "the cancel response", cancel.content)

    done = {name: server.wait_job(job_id) for name, job_id in ids.items()}
    assert {name: job["status"] for name, job in done.items()} == {
        "fails": "failed",
        "bad-output": "failed",
        "times-out": "failed",
        "cancelled": "cancelled",
        "no-image": "failed",
        "no-user": "failed",
    }
    assert done["fails"]["attempt"] == 2
    assert done["fails"]["error"] == "the container exited with code 3"
    assert done["fails"]["output"] == {"partial": "***"}
    assert "not valid JSON" in done["bad-output"]["error"]
    assert done["times-out"]["error"].startswith("timed out")
    assert MISSING_IMAGE in done["no-image"]["error"]
    assert "no-such-user" in done["no-user"]["error"]
    events = [e["type"] for e in server.events(ids["fails"])]
    assert "retrying" in events
    assert "cancel_requested" in [e["type"] for e in server.events(ids["cancelled"])]
    for name in ("fails", "times-out", "cancelled"):
        assert "out=***" in server.logs(ids[name])
    for job_id in ids.values():
        assert_job_clean(server.http, canary, job_id)


# --- webhooks ------------------------------------------------------------------------------


def test_webhook_bodies_and_deliveries_never_carry_it(server: LiveServer, canary: str) -> None:
    receiver = Receiver()
    receiver.start()
    try:
        echo = 'echo "out=$API_TOKEN"; echo "err=$API_TOKEN" >&2; '
        output = 'printf \'{"echo": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"'
        server.register(sh("hooked", echo + output))
        server.register(sh("hooked-fails", f"{echo}{output}; exit 3"))
        ids = []
        for name in ("hooked", "hooked-fails"):
            body = {
                "definition": name,
                "secret_env": {"API_TOKEN": canary},
                "webhook": receiver.url(f"/{name}"),
            }
            response = server.http.post(JOBS, json=body)
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])

        def delivered(job_id: str) -> bool:
            found = server.http.get(f"{JOBS}/{job_id}/deliveries").json()["items"]
            return bool(found) and found[0]["status"] == "delivered"

        for job_id in ids:
            wait_for(lambda job_id=job_id: delivered(job_id), timeout=60)
            (request,) = receiver.of(job_id)
            assert json.loads(request.body)["output"] == {"echo": "***"}
            assert json.loads(request.body)["secret_env"] == {"API_TOKEN": "***"}
            assert_absent(canary, "the webhook body", request.body)
            assert_absent(canary, "the webhook headers", json.dumps(request.headers))
            deliveries = server.http.get(f"{JOBS}/{job_id}/deliveries")
            assert_absent(canary, "the delivery list", deliveries.content)
            assert_job_clean(server.http, canary, job_id)
        assert server.job(ids[1])["status"] == "failed"
    finally:
        receiver.stop()


# --- the container -------------------------------------------------------------------------


def test_the_container_has_it_only_in_its_environment(
    server: LiveServer, canary: str, docker_client: docker.DockerClient
) -> None:
    server.register(sh("holder", WAIT_FOR_STOP, labels={"team": "data"}))
    job = submit(server.http, canary, "holder")
    running = server.wait_job(job["id"], {"running"})
    (container,) = containers_of(docker_client, job["id"])
    assert container.id == running["container_id"]
    inspect = docker_client.api.inspect_container(container.id)
    config = inspect["Config"]
    assert f"API_TOKEN={canary}" in config["Env"]
    for where, value in {
        "labels": config["Labels"],
        "name": inspect["Name"],
        "command": config["Cmd"],
        "entrypoint": config["Entrypoint"],
        "arguments": inspect["Args"],
        "path": inspect["Path"],
    }.items():
        assert_absent(canary, f"the container's {where}", json.dumps(value, ensure_ascii=False))
    del config["Env"]
    assert_absent(
        canary, "the container's inspect JSON (Env aside)", json.dumps(inspect, ensure_ascii=False)
    )
    assert server.http.post(f"{JOBS}/{job['id']}/cancel").status_code == 200
    assert server.wait_job(job["id"])["status"] == "cancelled"


# --- the CLI -------------------------------------------------------------------------------


def cli(server: LiveServer, *args: str, **extra: str) -> Result:
    """The CLI in-process, against ``server``, with its token given as ``ORCH_TOKEN`` (and
    ``extra`` environment variables)."""
    env = {
        "ORCH_URL": server.url,
        "ORCH_TOKEN": server.http.headers["Authorization"].removeprefix("Bearer "),
        "ORCH_DATA_DIR": "/nonexistent",
        **extra,
    }
    return CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)


def test_the_cli_never_prints_it(server: LiveServer, canary: str) -> None:
    server.register(
        sh("cli-ok", 'echo "token=$API_TOKEN"; printf \'["%s"]\' "$API_TOKEN" > "$ORCH_OUTPUT"')
    )
    server.register(sh("cli-fails", 'echo "token=$API_TOKEN" >&2; exit 4'))
    ok = submit(server.http, canary, "cli-ok")["id"]
    failed = submit(server.http, canary, "cli-fails")["id"]
    server.wait_job(ok)
    server.wait_job(failed)
    # The CLI reads a secret's value from the environment, never from its arguments.
    secret, value = "API_TOKEN", {"API_TOKEN": canary}
    results: dict[str, tuple[Result, int]] = {}
    for job_id in (ok, failed):
        for command in ("get", "logs", "events"):
            for extra in ((), ("--json",)):
                results[" ".join(("jobs", command, job_id, *extra))] = (
                    cli(server, "jobs", command, job_id, *extra),
                    0,
                )
        results[f"jobs logs --follow {job_id}"] = (cli(server, "jobs", "logs", "-f", job_id), 0)
    results["jobs ls"] = (cli(server, "jobs", "ls"), 0)
    results["jobs ls --json"] = (cli(server, "jobs", "ls", "--json"), 0)
    results["submit --follow"] = (
        cli(server, "submit", "cli-ok", "--secret", secret, "-f", **value),
        0,
    )
    results["submit --follow --json"] = (
        cli(server, "submit", "cli-fails", "--secret", secret, "-f", "--json", **value),
        4,
    )
    # A name the CLI takes (a Python identifier) and the server refuses (not ASCII).
    results["submit, a refused secret name"] = (
        cli(server, "submit", "cli-ok", "--secret", "ÄPI_TOKEN=env:API_TOKEN", **value),
        1,
    )
    results["submit, an unknown definition"] = (
        cli(server, "submit", "absent", "--secret", secret, **value),
        1,
    )
    results["submit, a malformed --secret"] = (
        cli(server, "submit", "cli-ok", "--secret", canary),
        2,
    )
    results["submit, a --secret value on the command line"] = (
        cli(server, "submit", "cli-ok", "--secret", f"API_TOKEN={canary}"),
        2,
    )
    for what, (result, code) in results.items():
        assert result.exit_code == code, (what, result.stdout, result.stderr)
        assert_absent(canary, f"the output of {what}", result.stdout + result.stderr)
    assert "token=***" in results[f"jobs logs {ok}"][0].stdout
    assert '["***"]' in results[f"jobs get {ok}"][0].stdout
    assert "token=***" in results["submit --follow --json"][0].stderr


# --- the server's own log ------------------------------------------------------------------


@pytest.fixture
def served(
    tmp_path: Path,
    database_url: str,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[tuple[httpx.Client, subprocess.Popen[bytes], Path]]:
    """``orchestrator serve`` as a real process, its output going to a file: a client with the
    admin token, the process, and the file. Its containers are removed at the end."""
    data_dir = tmp_path / "served"
    runner_name = f"test-{uuid.uuid4().hex[:10]}"
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORCH_")}
    env.update(
        ORCH_DATA_DIR=str(data_dir),
        ORCH_DATABASE_URL=database_url,
        ORCH_PORT=str(port),
        ORCH_RUNNER_NAME=runner_name,
        ORCH_LOG_FLUSH_INTERVAL="0.1",
        ORCH_STOP_GRACE_PERIOD="1",
        ORCH_POLL_INTERVAL="1",
        ORCH_MAX_BODY_BYTES=str(MAX_BODY_BYTES),
        ORCH_POLICY_ALLOW_LOCAL_REGISTRIES="true",
    )
    log = tmp_path / "server.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve"],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"

    def healthy() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, timeout=60)
        token = (data_dir / "admin-token").read_text().strip()
        with httpx.Client(base_url=url, timeout=30, headers=bearer(token)) as http:
            yield http, process, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(30)
        if (data_dir / "admin-token").exists():  # it started: its installation exists
            settings = Settings(data_dir=data_dir, database_url=database_url)
            remove_installation(docker_client, installation_of(settings))


def test_the_server_log_never_has_it(
    served: tuple[httpx.Client, subprocess.Popen[bytes], Path], canary: str
) -> None:
    http, process, log = served
    # Jobs whose logs and output hold a NUL: the database may refuse those, and the traceback
    # it logs then must not carry the value either.
    definitions = {
        "ok": sh("ok", 'echo "$API_TOKEN"; printf \'{"v": "%s"}\' "$API_TOKEN" > "$ORCH_OUTPUT"'),
        "fails": sh("fails", 'echo "$API_TOKEN" >&2; exit 3'),
        "times-out": sh("times-out", PRINT_FOREVER, timeout="1s"),
        "cancelled": sh("cancelled", PRINT_FOREVER),
        "no-image": sh("no-image", "echo never", image=MISSING_IMAGE),
        "no-user": sh("no-user", "echo never", user="no-such-user"),
        "nul-log": sh("nul-log", 'printf "nul\\0 %s\\n" "$API_TOKEN"'),
        "nul-output": sh("nul-output", NUL_OUTPUT),
    }
    for spec in definitions.values():
        assert http.post("/v1/projects/default/definitions", json=spec).status_code in (200, 201)
    ids = {name: submit(http, canary, name)["id"] for name in definitions}
    prepare_refusals(http)
    refuse_all(http, canary)
    wait_for(lambda: b"***" in http.get(f"{JOBS}/{ids['cancelled']}/logs").content)
    assert http.post(f"{JOBS}/{ids['cancelled']}/cancel").status_code == 200

    def finished() -> bool:
        return all(http.get(f"{JOBS}/{i}").json()["status"] in TERMINAL for i in ids.values())

    wait_for(finished, timeout=90)
    statuses = {name: http.get(f"{JOBS}/{i}").json()["status"] for name, i in ids.items()}
    assert statuses["ok"] == "succeeded"
    assert statuses["cancelled"] == "cancelled"
    assert {statuses[n] for n in ("fails", "times-out", "no-image", "no-user")} == {"failed"}

    process.send_signal(signal.SIGINT)
    assert process.wait(60) == 0
    written = log.read_bytes()
    # The log was captured at INFO, the most verbose level ``serve`` has: access lines are in it.
    assert b"Uvicorn running on" in written
    assert b'"POST /v1/projects/default/jobs HTTP/1.1" 400' in written
    assert_absent(canary, "the server's own log", written)
