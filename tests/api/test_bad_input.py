"""Bad input to the REST API: every malformed request is a 4xx JSON error that names the field
and the reason, never a 500 or a traceback, and never echoes a secret value.

Every error body is ``{"code", "message", "field"}``. Unknown projects, queues, definitions and
jobs are 404s naming them; names must match ``^[a-z][a-z0-9-]{0,61}[a-z0-9]$``; bodies over
``max_body_bytes`` are 413s.

For speed one live server per database serves the whole module, and each test works in a fresh
project of its own (a project is the product's isolation boundary), with a paused queue so that no
job runs: only one test starts a container. Every response of every test is checked: a 5xx fails
the test at once.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import docker
import httpx
import pytest

from ..conftest import (
    DATABASES,
    TERMINAL,
    TEST_IMAGE,
    LiveServer,
    admin_token,
    bearer,
    module_server,
    wait_for,
)

CANARY = "canary-Vf3kQ9-secret-value"
NUMERIC_CANARY = 8675309123457
HELD = "held"  # a paused queue whose default definition is `noop`: jobs wait there, never run
JSON = {"content-type": "application/json"}
UNKNOWN_UUID = "5b0c3c8e-2f7a-4c1e-9d7e-3a1f0b6c9d42"

CODES = {
    400: "invalid_request",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
}

NOOP = {"name": "noop", "image": TEST_IMAGE, "command": ["true"]}
RENDER = {"name": "render", "image": TEST_IMAGE, "command": ["echo", "Param::frame"]}
USE_SECRET = {"name": "use-secret", "image": TEST_IMAGE, "command": ["true"], "secrets": ["TOKEN"]}


# --- the server, a project per test, and the checks ----------------------------------------


def _refuse_server_errors(response: httpx.Response) -> None:
    """An httpx response hook: any 5xx fails the test at once, with the response shown."""
    if response.status_code >= 500:
        response.read()
        request = response.request
        raise AssertionError(
            f"{request.method} {request.url} -> {response.status_code}: {response.text}"
        )


class Api:
    """A client of one project on a live server; every 5xx response fails the test.

    A path starting with ``/`` is absolute; any other is relative to the project, so ``"jobs"``
    means ``/v1/projects/{project}/jobs``.
    """

    def __init__(self, url: str, project: str, token: str) -> None:
        self.url = url
        self.project = project
        self.headers = bearer(token)
        self.http = httpx.Client(
            base_url=url,
            timeout=30,
            headers=self.headers,
            event_hooks={"response": [_refuse_server_errors]},
        )

    def __enter__(self) -> Api:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def path(self, path: str) -> str:
        return path if path.startswith("/") else f"/v1/projects/{self.project}/{path}"

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, self.path(path), **kwargs)

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.request("DELETE", path, **kwargs)

    def created(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST ``body``; assert 201; the created resource."""
        response = self.post(path, json=body)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def submit_waiting(self, **body: Any) -> dict[str, Any]:
        """A job that waits in the paused queue."""
        return self.created("jobs", {"queue": HELD, **body})

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.get(f"jobs/{job_id}")
        assert response.status_code == 200, response.text
        return dict(response.json())

    def jobs(self, fields: str = "") -> list[dict[str, Any]]:
        """Every job of the project (the listing itself must work), with ``fields``."""
        response = self.get(f"jobs?fields={fields}" if fields else "jobs")
        assert response.status_code == 200, response.text
        return list(response.json()["items"])


@pytest.fixture(scope="module", params=DATABASES)
def shared_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    busybox_image: str,
    docker_client: docker.DockerClient,
) -> Iterator[LiveServer]:
    """One live server (with its runner) on a fresh database for the whole module."""
    root = tmp_path_factory.mktemp(f"bad-input-{request.param}")
    with module_server(request.param, root, docker_client) as server:
        yield server


def setup_project(api: Api) -> Api:
    """The test definitions and the paused queue in ``api``'s project."""
    for spec in (NOOP, RENDER, USE_SECRET):
        api.created("definitions", spec)
    api.created("queues", {"name": HELD, "paused": True, "default_definition": "noop"})
    return api


@pytest.fixture
def api(shared_server: LiveServer) -> Iterator[Api]:
    """A fresh project of this test's own on the shared server, set up by ``setup_project``."""
    with Api(
        shared_server.url, f"t-{uuid.uuid4().hex[:12]}", admin_token(shared_server.settings)
    ) as client:
        client.created("/v1/projects", {"name": client.project})
        yield setup_project(client)


def expect_error(
    response: httpx.Response,
    status: int,
    field: str | tuple[str | None, ...] | None,
    *reasons: str | tuple[str, ...],
    code: str | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Assert an error response and return its body.

    ``field``: the exact ``field`` (or a tuple of acceptable ones). ``reasons``: words the
    message must contain (case-insensitive; a tuple means any one of them). A 400's message must
    also name its field. No response may echo a secret or show a traceback.
    """
    text = response.text
    where = f"{response.request.method} {response.request.url} -> {response.status_code}: {text}"
    assert response.status_code == status, where
    assert response.headers.get("content-type", "").startswith("application/json"), where
    body = response.json()
    assert isinstance(body, dict), where
    assert set(body) == {"code", "message", "field"}, where
    codes = code if isinstance(code, tuple) else (code or CODES[status],)
    assert body["code"] in codes, where
    fields = field if isinstance(field, tuple) else (field,)
    assert body["field"] in fields, where
    message = body["message"]
    assert isinstance(message, str) and message, where
    if status == 400 and body["field"]:
        assert body["field"].rsplit(".", 1)[-1].lower() in message.lower(), where
    for reason in reasons:
        words = reason if isinstance(reason, tuple) else (reason,)
        assert any(word.lower() in message.lower() for word in words), where
    assert_no_secret(response)
    return dict(body)


def assert_no_secret(response: httpx.Response) -> None:
    """Neither the canary secret nor a traceback appears anywhere in the response."""
    everything = response.text + str(response.headers)
    assert CANARY not in everything, f"secret echoed: {response.text}"
    assert str(NUMERIC_CANARY) not in everything, f"secret echoed: {response.text}"
    assert "Traceback" not in everything, response.text


def with_secret(**body: Any) -> dict[str, Any]:
    """A job body on the paused queue carrying a (valid) secret value: the canary."""
    return {"queue": HELD, "secret_env": {"API_KEY": CANARY}, **body}


# --- bodies that are not a JSON object ------------------------------------------------------

BODY_ENDPOINTS = [
    pytest.param("POST", "/v1/projects", "invalid_request", id="projects"),
    pytest.param("POST", "queues", "invalid_request", id="queues"),
    pytest.param("PATCH", f"queues/{HELD}", "invalid_request", id="queue-patch"),
    pytest.param("POST", "jobs", "invalid_request", id="jobs"),
    pytest.param("POST", "definitions", "invalid_definition", id="definitions"),
]
NOT_AN_OBJECT = ("object", "mapping")
BAD_BODIES = [
    pytest.param(b'{"name": "x", "image": ', ("JSON", "YAML"), id="malformed-json"),
    pytest.param(b'{"name": "x",, }', ("JSON", "YAML"), id="malformed-json-comma"),
    pytest.param(b"[1, 2]", NOT_AN_OBJECT, id="array"),
    pytest.param(b'"name"', NOT_AN_OBJECT, id="string"),
    pytest.param(b"42", NOT_AN_OBJECT, id="number"),
    pytest.param(b"null", (*NOT_AN_OBJECT, "required", "no definition"), id="null"),
    pytest.param(b"", ("required", "no definition", "empty"), id="empty"),
    pytest.param(b'{"name": "caf\xe9"}', ("UTF-8",), id="not-utf8"),
]


@pytest.mark.parametrize(("method", "path", "code"), BODY_ENDPOINTS)
@pytest.mark.parametrize(("content", "reason"), BAD_BODIES)
def test_body_that_is_not_a_json_object_is_400_naming_body(
    api: Api, method: str, path: str, code: str, content: bytes, reason: tuple[str, ...]
) -> None:
    response = api.request(method, path, content=content, headers=JSON)
    expect_error(response, 400, "body", reason, code=code)


def test_malformed_json_carrying_a_secret_does_not_echo_it(api: Api) -> None:
    content = f'{{"queue": "{HELD}", "secret_env": {{"TOKEN": "{CANARY}"}},, }}'.encode()
    expect_error(api.post("jobs", content=content, headers=JSON), 400, "body", "JSON")


# --- field-level validation of a job submission -------------------------------------------

SUBMIT_FIELD_ERRORS = [
    pytest.param({"paramters": {"frame": 1}}, "paramters", "unknown field", id="misspelt-field"),
    pytest.param({"secret_envs": {"X": "y"}}, "secret_envs", "unknown field", id="unknown-field-2"),
    pytest.param({"parameters": {"frame": {"a": 1}}}, "parameters.frame", "string", id="param-obj"),
    pytest.param({"parameters": {"frame": [1, 2]}}, "parameters.frame", "string", id="param-list"),
    pytest.param({"parameters": {"frame": None}}, "parameters.frame", "string", id="param-null"),
    pytest.param({"parameters": {"bad-name": 1}}, "parameters.bad-name", "pattern", id="param-key"),
    pytest.param({"parameters": ["frame"]}, "parameters", "dictionary", id="params-list"),
    pytest.param({"priority": "high"}, "priority", "integer", id="priority-string"),
    pytest.param({"priority": 1.5}, "priority", "integer", id="priority-fraction"),
    pytest.param({"priority": 10**7}, "priority", "less than or equal", id="priority-too-big"),
    pytest.param({"priority": -(10**7)}, "priority", "greater than", id="priority-too-small"),
    pytest.param({"env": {"MODE": ["a"]}}, "env.MODE", "string", id="env-value-list"),
    pytest.param({"env": {"MODE": {"a": 1}}}, "env.MODE", "string", id="env-value-object"),
    pytest.param({"env": {"1BAD": "x"}}, "env.1BAD", "pattern", id="env-name"),
    pytest.param({"env": "MODE=fast"}, "env", "dictionary", id="env-string"),
    pytest.param({"command": "echo hi"}, "command", "list", id="command-string"),
    pytest.param({"command": ["echo", 1]}, "command.1", "string", id="command-element"),
    pytest.param({"metadata": [1]}, "metadata", "dictionary", id="metadata-list"),
    pytest.param({"name": ""}, "name", "at least 1", id="job-name-empty"),
    pytest.param({"name": "x" * 256}, "name", "at most 255", id="job-name-long"),
    pytest.param({"queue": "Bad_Queue"}, "queue", "pattern", id="queue-name"),
    pytest.param({"definition": 5}, "definition", "string", id="definition-number"),
    pytest.param({"timeout": "soon"}, "timeout", "not a duration", id="timeout-soon"),
    pytest.param({"timeout": "-1s"}, "timeout", "not a duration", id="timeout-negative"),
    pytest.param({"timeout": 0}, "timeout", "greater than zero", id="timeout-zero"),
    pytest.param({"timeout": -5}, "timeout", "greater than zero", id="timeout-minus-5"),
    pytest.param({"timeout": ""}, "timeout", "not a duration", id="timeout-empty"),
    pytest.param({"timeout": True}, "timeout", "duration", id="timeout-bool"),
    pytest.param({"timeout": [1]}, "timeout", "duration", id="timeout-list"),
    pytest.param({"schedule_at": "tomorrow"}, "schedule_at", "datetime", id="schedule-tomorrow"),
    pytest.param({"schedule_at": True}, "schedule_at", "time", id="schedule-bool"),
    pytest.param({"schedule_at": 1e300}, "schedule_at", "range", id="schedule-far-future"),
    pytest.param({"schedule_at": -1e20}, "schedule_at", "range", id="schedule-far-past"),
    pytest.param(
        {"schedule_at": "9999-12-31T23:59:59-01:00"}, "schedule_at", "range", id="schedule-y10k"
    ),
    pytest.param({"webhook": "not a url"}, "webhook", "URL", id="webhook-not-url"),
    pytest.param({"webhook": "ftp://example.com/x"}, "webhook", "http", id="webhook-ftp"),
    pytest.param({"webhook": 5}, "webhook", "URL", id="webhook-number"),
    pytest.param({"retry": {"attempts": 0}}, "retry.attempts", "greater", id="retry-attempts-0"),
    pytest.param({"retry": {"attempts": 101}}, "retry.attempts", "less", id="retry-attempts-101"),
    pytest.param(
        {"retry": {"on": [{"exit_codes": [1], "action": "maybe"}]}},
        "retry.on.0.action",
        "retry",
        id="retry-rule-action",
    ),
    pytest.param({"retry": {"tries": 3}}, "retry.tries", "unknown field", id="retry-unknown"),
    pytest.param({"retry": 3}, "retry", "object", id="retry-number"),
]


@pytest.mark.parametrize(("fault", "field", "reason"), SUBMIT_FIELD_ERRORS)
def test_submit_field_error_is_400_naming_the_field(
    api: Api, fault: dict[str, Any], field: str, reason: str
) -> None:
    # Every body carries a valid secret value: it must not come back in the error either.
    expect_error(api.post("jobs", json=with_secret(**fault)), 400, field, reason)
    assert api.jobs() == []


@pytest.mark.parametrize(
    "value",
    [None, 0, -1.5, "text", "", [1, "a", None], {"a": {"b": [True, 2.5]}}, True, 2**53],
    ids=repr,
)
def test_input_may_be_any_json(api: Api, value: Any) -> None:
    job = api.submit_waiting(input=value)
    assert job["input"] == value
    assert api.job(job["id"])["input"] == value


# --- JSON values no field or database can hold ----------------------------------------------

RAW_VALUE_ERRORS = [
    pytest.param(b'"parameters": {"n": NaN}', ("parameters.n", "body"), id="param-nan"),
    pytest.param(b'"parameters": {"n": Infinity}', ("parameters.n", "body"), id="param-inf"),
    pytest.param(b'"input": NaN', ("input", "body"), id="input-nan"),
    pytest.param(
        b'"metadata": {"x": -Infinity}', ("metadata.x", "metadata", "body"), id="meta-inf"
    ),
    pytest.param(b'"timeout": Infinity', ("timeout", "body"), id="timeout-inf"),
    pytest.param(b'"timeout": 1e400', ("timeout", "body"), id="timeout-overflow"),
    pytest.param(b'"schedule_at": Infinity', ("schedule_at", "body"), id="schedule-inf"),
    pytest.param(b'"input": "\\ud800"', ("input", "body"), id="input-lone-surrogate"),
    pytest.param(
        b'"metadata": {"k": "\\udfff"}', ("metadata.k", "metadata", "body"), id="meta-sur"
    ),
    pytest.param(b'"input": ' + b"[" * 900 + b"]" * 900, ("input", "body"), id="input-too-deep"),
    pytest.param(b'"name": "a\\u0000b"', ("name",), id="job-name-nul"),
    pytest.param(b'"env": {"A": "a\\u0000b"}', ("env.A",), id="env-value-nul"),
    pytest.param(b'"command": ["echo", "a\\u0000b"]', ("command.1", "command"), id="command-nul"),
]


@pytest.mark.parametrize(("member", "field"), RAW_VALUE_ERRORS)
def test_submit_value_that_cannot_be_stored_is_400(
    api: Api, member: bytes, field: tuple[str, ...]
) -> None:
    prefix = f'{{"queue": "{HELD}", "secret_env": {{"API_KEY": "{CANARY}"}}, '.encode()
    response = api.post("jobs", content=prefix + member + b"}", headers=JSON)
    expect_error(response, 400, field)
    # A refused submission leaves nothing behind that could break the job list.
    assert api.jobs() == []


@pytest.mark.parametrize(
    ("path", "body"),
    [
        pytest.param("/v1/projects", {"name": "nul-project", "description": "a\x00b"}, id="proj"),
        pytest.param("queues", {"name": "nul", "description": "a\x00b"}, id="queue"),
        pytest.param("queues", {"name": "nul", "display_name": "a\x00b"}, id="queue-display"),
    ],
)
def test_nul_character_in_a_description_is_400(api: Api, path: str, body: dict[str, Any]) -> None:
    field = next(key for key, value in body.items() if "\x00" in value)
    expect_error(api.post(path, json=body), 400, field)


# --- submission rules checked against the definition --------------------------------------


@pytest.mark.parametrize(
    ("body", "field", "reasons"),
    [
        pytest.param(
            {"definition": "render"}, "parameters.frame", ("frame", "no value"), id="missing-param"
        ),
        pytest.param(
            {"definition": "render", "parameters": {"frames": 1}},
            "parameters.frames",
            ("frames", "neither declares nor uses", "its parameters: frame"),
            id="misnamed-param",
        ),
        pytest.param(
            {"definition": "noop", "command": ["echo", "Ref::size"]},
            "parameters.size",
            ("size",),
            id="missing-param-in-command-override",
        ),
        pytest.param(
            {"definition": "use-secret"}, "secret_env.TOKEN", ("required",), id="missing-secret"
        ),
        pytest.param(
            {"env": {"ORCH_JOB_ID": "x"}}, "env.ORCH_JOB_ID", ("reserved",), id="reserved-env"
        ),
        pytest.param(
            {"env": {"orch_attempt": "x"}}, "env.orch_attempt", ("reserved",), id="reserved-lower"
        ),
        pytest.param(
            {"secret_env": {"ORCH_QUEUE": CANARY}},
            "secret_env.ORCH_QUEUE",
            ("reserved",),
            id="reserved-secret-env",
        ),
        pytest.param(
            {"env": {"TOKEN": "plain"}, "secret_env": {"TOKEN": CANARY}},
            ("env.TOKEN", "secret_env.TOKEN"),
            ("secret_env", "env"),
            id="env-and-secret-env",
        ),
        pytest.param(
            {"definition": "Hello!"}, "definition", ("Hello!", "reference"), id="ref-not-a-name"
        ),
        pytest.param(
            {"definition": "hello:abc"}, "definition", ("hello:abc", "reference"), id="ref-version"
        ),
        pytest.param(
            {"queue": "default"}, "definition", ("required", "default"), id="no-definition"
        ),
    ],
)
def test_submit_against_the_definition_is_400_naming_the_field(
    api: Api, body: dict[str, Any], field: str | tuple[str, ...], reasons: tuple[str, ...]
) -> None:
    # The canary rides along (as a valid secret) in requests that fail for other reasons.
    response = api.post("jobs", json=with_secret(**body))
    expect_error(response, 400, field, *reasons, code=("invalid_request", "invalid_definition"))
    assert api.jobs() == []


# --- secret values are never echoed --------------------------------------------------------


@pytest.mark.parametrize(
    ("secret_env", "field", "reason"),
    [
        pytest.param({"TOKEN": [CANARY]}, "secret_env.TOKEN", "string", id="value-list"),
        pytest.param({"TOKEN": {"value": CANARY}}, "secret_env.TOKEN", "string", id="value-obj"),
        pytest.param({"TOKEN": NUMERIC_CANARY}, "secret_env.TOKEN", "string", id="value-number"),
        pytest.param({"TOKEN": None}, "secret_env.TOKEN", "string", id="value-null"),
        pytest.param(CANARY, "secret_env", "dictionary", id="whole-string"),
        pytest.param([CANARY], "secret_env", "dictionary", id="whole-list"),
        pytest.param({"bad-name": CANARY}, "secret_env", "pattern", id="bad-name"),
    ],
)
def test_bad_secret_env_is_400_and_never_echoes_the_value(
    api: Api, secret_env: Any, field: str, reason: str
) -> None:
    response = api.post("jobs", json={"queue": HELD, "secret_env": secret_env})
    expect_error(response, 400, field, reason)


@pytest.mark.parametrize(
    ("body", "status", "field"),
    [
        pytest.param({"queue": "nope"}, 404, "queue", id="unknown-queue"),
        pytest.param({"definition": "nope"}, 404, "definition", id="unknown-definition"),
        pytest.param({"priority": "high"}, 400, "priority", id="bad-priority"),
        pytest.param({"definition": "render"}, 400, "parameters.frame", id="missing-parameter"),
    ],
)
def test_a_secret_in_a_request_that_fails_otherwise_is_not_echoed(
    api: Api, body: dict[str, Any], status: int, field: str
) -> None:
    payload = {"queue": HELD, **body, "secret_env": {"TOKEN": CANARY, "OTHER": CANARY}}
    expect_error(api.post("jobs", json=payload), status, field)


# --- unknown projects, queues, definitions and jobs are 404s naming them ------------------

UNKNOWN_PROJECT = [
    ("GET", "/v1/projects/nope", None),
    ("GET", "/v1/projects/nope/jobs", None),
    ("POST", "/v1/projects/nope/jobs", {"definition": "noop"}),
    ("GET", f"/v1/projects/nope/jobs/{UNKNOWN_UUID}", None),
    ("POST", f"/v1/projects/nope/jobs/{UNKNOWN_UUID}/cancel", None),
    ("GET", "/v1/projects/nope/queues", None),
    ("POST", "/v1/projects/nope/queues", {"name": "fresh"}),
    ("GET", "/v1/projects/nope/queues/default", None),
    ("PATCH", "/v1/projects/nope/queues/default", {"priority": 1}),
    ("DELETE", "/v1/projects/nope/queues/default", None),
    ("GET", "/v1/projects/nope/definitions", None),
    ("POST", "/v1/projects/nope/definitions", {"name": "fresh", "image": TEST_IMAGE}),
    ("GET", "/v1/projects/nope/definitions/noop", None),
    ("GET", "/v1/projects/nope/definitions/noop/versions", None),
    ("GET", "/v1/projects/nope/definitions/noop/versions/1", None),
]


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [pytest.param(*case, id=f"{case[0]} {case[1]}") for case in UNKNOWN_PROJECT],
)
def test_unknown_project_is_404_naming_it(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = api.request(method, path, json=body)
    expect_error(response, 404, "project", "'nope'", "not found")


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "named"),
    [
        pytest.param("POST", "jobs", {"queue": "nope", "definition": "noop"}, "queue", "'nope'"),
        pytest.param("GET", "queues/nope", None, "queue", "'nope'"),
        pytest.param("PATCH", "queues/nope", {"paused": True}, "queue", "'nope'"),
        pytest.param("DELETE", "queues/nope", None, "queue", "'nope'"),
        pytest.param("POST", "jobs", {"definition": "nope"}, "definition", "'nope'"),
        pytest.param("POST", "jobs", {"definition": "noop:9"}, "definition", "'noop:9'"),
        pytest.param("GET", "definitions/nope", None, "definition", "'nope'"),
        pytest.param("GET", "definitions/nope/versions", None, "definition", "'nope'"),
        pytest.param("GET", "definitions/nope/versions/1", None, "definition", "'nope:1'"),
        pytest.param("GET", "definitions/noop/versions/9", None, "definition", "'noop:9'"),
        pytest.param("GET", "definitions/noop/versions/0", None, "definition", "'noop:0'"),
        pytest.param(
            "POST",
            "queues",
            {"name": "fresh", "default_definition": "nope"},
            "default_definition",
            "'nope'",
        ),
        pytest.param(
            "PATCH",
            f"queues/{HELD}",
            {"default_definition": "noop:9"},
            "default_definition",
            "'noop:9'",
        ),
    ],
)
def test_unknown_queue_or_definition_is_404_naming_it(
    api: Api, method: str, path: str, body: dict[str, Any] | None, field: str, named: str
) -> None:
    response = api.request(method, path, json=body)
    expect_error(response, 404, field, named, "not found")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        pytest.param("GET", f"definitions/noop/versions/{10**20}", None, id="get"),
        pytest.param("POST", "jobs", {"definition": f"noop:{10**20}"}, id="submit"),
        pytest.param(
            "PATCH", f"queues/{HELD}", {"default_definition": f"noop:{10**20}"}, id="queue"
        ),
    ],
)
def test_definition_version_beyond_any_integer_is_404(
    api: Api, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = api.request(method, path, json=body)
    expect_error(response, 404, ("definition", "default_definition"), "noop", "not found")


@pytest.mark.parametrize(
    "job_id",
    [UNKNOWN_UUID, "not-a-job", "x" * 300],
    ids=["uuid", "garbage", "long"],
)
@pytest.mark.parametrize(
    ("method", "suffix"),
    [
        ("GET", ""),
        ("POST", "/cancel"),
        ("GET", "/events"),
        ("GET", "/logs"),
        ("GET", "/logs?follow=true"),
        ("GET", "/stream"),
    ],
    ids=["get", "cancel", "events", "logs", "logs-follow", "stream"],
)
def test_unknown_job_is_404_naming_it(api: Api, job_id: str, method: str, suffix: str) -> None:
    response = api.request(method, f"jobs/{quote(job_id, safe='')}{suffix}")
    expect_error(response, 404, "job", job_id, "not found")


def test_job_of_another_project_is_404(api: Api) -> None:
    job = api.submit_waiting()
    for suffix in ("", "/events", "/logs", "/stream"):
        response = api.get(f"/v1/projects/default/jobs/{job['id']}{suffix}")
        expect_error(response, 404, "job", job["id"], "not found")
    expect_error(api.post(f"/v1/projects/default/jobs/{job['id']}/cancel"), 404, "job", job["id"])
    assert api.job(job["id"])["status"] == "queued"


# --- NUL characters in path and query values ---------------------------------------------

NUL_VALUE = "a\x00b"
# Each drop-in API's error body (its keys, and the one holding the message) by path prefix;
# any other path is native.
ERROR_SHAPES = {
    "/api/public/": ({"type", "title", "status", "detail"}, "detail"),
    "/v1/client/": ({"ok", "message"}, "message"),
    "/jobs": ({"error"}, "error"),
}
NATIVE_SHAPE = ({"code", "message", "field"}, "message")


def _existing_values(api: Api, runner: str) -> dict[str, str]:
    """A value naming something that exists for each path parameter of the API (``name`` by
    the collection it is in), so that a NUL in one parameter gets past the others."""
    job = api.submit_waiting()
    token = api.created("/v1/tokens", {"name": "probe", "role": "read", "project": api.project})
    api.created(
        "schedules",
        {
            "name": "nightly",
            "cron": "0 3 * * *",
            "paused": True,
            "target": {"job": {"queue": HELD}},
        },
    )
    return {
        "project": api.project,
        "project_name": api.project,
        "organization_name": "acme-corp",
        "queue_name": HELD,
        "job_id": job["id"],
        "queue_job_id": job["id"],
        "id": job["id"],  # GA4GH TES's task id
        "token_id": token["id"],
        "version": "1",
        "number": "1",
        "queues.name": HELD,
        "definitions.name": "noop",
        "schedules.name": "nightly",
        "runners.name": runner,
    }


def _nul_refusal_problem(path: str, name: str, response: httpx.Response) -> str | None:
    """What is wrong with the answer to a NUL in parameter ``name`` of ``path``; None if it is
    a 400 in the route's error shape whose message names the parameter."""
    shown = f"{response.status_code}: {response.text[:300]}"
    if response.status_code != 400:
        return shown
    keys, message_key = next(
        (shape for prefix, shape in ERROR_SHAPES.items() if path.startswith(prefix)), NATIVE_SHAPE
    )
    body = response.json()
    if not isinstance(body, dict) or set(body) != keys:
        return f"not the route's error shape: {shown}"
    if keys == NATIVE_SHAPE[0] and (body["code"], body["field"]) != ("invalid_request", name):
        return f"not an invalid_request naming {name}: {shown}"
    message = str(body[message_key])
    if not message.startswith(f"{name}: ") or "NUL" not in message:
        return f"the message does not say {name} holds a NUL: {shown}"
    return None


def test_nul_in_any_path_or_query_value_is_400_naming_the_parameter(
    api: Api, shared_server: LiveServer
) -> None:
    # Every operation of the served document, the drop-in APIs' included, with a NUL in each
    # of its path and query parameters in turn; PostgreSQL cannot compare text with a NUL.
    values = _existing_values(api, shared_server.settings.runner_name)
    document = api.get("/openapi.json").json()
    failures, probed = [], 0
    # A client without the 5xx hook: every failure is listed, not only the first.
    with httpx.Client(base_url=api.url, timeout=30, headers=api.headers) as http:
        for path, item in document["paths"].items():
            for method, operation in item.items():
                parameters = [
                    p for p in operation.get("parameters", []) if p["in"] in ("path", "query")
                ]
                for parameter in parameters:
                    url = path
                    for other in (p for p in parameters if p["in"] == "path"):
                        name = other["name"]
                        key = name
                        if name == "name":
                            key = f"{path.partition('/{name}')[0].rpartition('/')[2]}.name"
                        value = NUL_VALUE if other is parameter else values[key]
                        url = url.replace(f"{{{name}}}", quote(value, safe=""))
                    query = {parameter["name"]: NUL_VALUE} if parameter["in"] == "query" else {}
                    response = http.request(method.upper(), url, params=query)
                    probed += 1
                    problem = _nul_refusal_problem(path, parameter["name"], response)
                    if problem is not None:
                        where = f"{method.upper()} {path} {parameter['in']} {parameter['name']}"
                        failures.append(f"{where} -> {problem}")
    assert probed > 100, probed
    assert not failures, "\n".join(failures)
    # Nothing was changed by the refused requests.
    assert api.job(values["job_id"])["status"] == "queued"


@pytest.mark.parametrize(
    "member",
    [
        pytest.param({"input": "a\x00b"}, id="input-string"),
        pytest.param({"input": {"text": ["a\x00b"]}}, id="input-nested"),
        pytest.param({"input": {"a\x00b": 1}}, id="input-key"),
        pytest.param({"metadata": {"note": "a\x00b"}}, id="metadata-value"),
    ],
)
def test_nul_in_a_json_document_is_kept(api: Api, member: dict[str, Any]) -> None:
    # JSON documents are stored as JSON (PostgreSQL's json type keeps a \u0000 escape, unlike
    # jsonb and text), so a NUL in one is the job's data, not an error.
    job = api.submit_waiting(**member)
    for field, value in member.items():
        assert job[field] == value
        assert api.job(job["id"])[field] == value
        assert [j[field] for j in api.jobs(fields=field)] == [value]


# --- names of projects and queues ----------------------------------------------------------

BAD_NAMES = [
    pytest.param("Upper", id="uppercase"),
    pytest.param("under_score", id="underscore"),
    pytest.param("a" * 64, id="too-long"),
    pytest.param("trailing-", id="trailing-hyphen"),
    pytest.param("-leading", id="leading-hyphen"),
    pytest.param("", id="empty"),
    pytest.param("a", id="one-char"),
    pytest.param("1abc", id="leading-digit"),
    pytest.param("has space", id="space"),
    pytest.param("café", id="non-ascii"),
    pytest.param("name\n", id="trailing-newline"),
]
CREATE = [pytest.param("/v1/projects", id="project"), pytest.param("queues", id="queue")]


@pytest.mark.parametrize("path", CREATE)
@pytest.mark.parametrize("name", BAD_NAMES)
def test_invalid_name_on_create_is_400_naming_name(api: Api, path: str, name: str) -> None:
    expect_error(api.post(path, json={"name": name}), 400, "name", "pattern")


@pytest.mark.parametrize("path", CREATE)
@pytest.mark.parametrize(
    ("body", "reason"),
    [
        pytest.param({}, "required", id="missing"),
        pytest.param({"name": 5}, "string", id="number"),
        pytest.param({"name": None}, "string", id="null"),
        pytest.param({"name": "fine-name", "colour": "red"}, "unknown field", id="unknown-field"),
    ],
)
def test_missing_or_non_string_name_is_400(
    api: Api, path: str, body: dict[str, Any], reason: str
) -> None:
    field = "colour" if "colour" in body else "name"
    expect_error(api.post(path, json=body), 400, field, reason)


def test_names_at_the_edges_of_the_pattern_are_accepted(api: Api) -> None:
    suffix = uuid.uuid4().hex[:8]
    for name in ("ab", "a" * 63, "a-1", "x--y"):
        api.created("queues", {"name": name})
    for name in (f"a{suffix}", f"p{suffix}".ljust(63, "z"), f"p-{suffix}", f"x--{suffix}"):
        api.created("/v1/projects", {"name": name})


@pytest.mark.parametrize("what", ["project", "default-project", "queue", "default-queue", HELD])
def test_duplicate_project_or_queue_is_409(api: Api, what: str) -> None:
    path = "/v1/projects" if "project" in what else "queues"
    name = {"project": f"dup-{uuid.uuid4().hex[:8]}", "queue": "dup"}.get(what, "default")
    if what == HELD:
        name = HELD
    if what in ("project", "queue"):
        api.created(path, {"name": name})
    response = api.post(path, json={"name": name})
    expect_error(response, 409, "name", f"'{name}'", "already exists")


# --- queues -------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PATCH"])
@pytest.mark.parametrize(
    ("fault", "field", "reason"),
    [
        pytest.param({"max_concurrency": 0}, "max_concurrency", "greater than", id="conc-0"),
        pytest.param({"max_concurrency": -1}, "max_concurrency", "greater than", id="conc-neg"),
        pytest.param({"max_concurrency": "two"}, "max_concurrency", "integer", id="conc-str"),
        pytest.param({"max_concurrency": 10**30}, "max_concurrency", "", id="conc-huge"),
        pytest.param({"priority": 10**7}, "priority", "less than", id="priority-big"),
        pytest.param({"priority": "high"}, "priority", "integer", id="priority-str"),
        pytest.param({"paused": "maybe"}, "paused", "boolean", id="paused"),
        pytest.param({"display_name": "x" * 256}, "display_name", "at most", id="display-name"),
        pytest.param({"description": ["x"]}, "description", "string", id="description"),
        pytest.param({"max_concurency": 2}, "max_concurency", "unknown field", id="misspelt"),
        pytest.param({"default_definition": 3}, "default_definition", "string", id="dd-number"),
        pytest.param(
            {"default_definition": "Hello!"}, "default_definition", "reference", id="dd-bad-ref"
        ),
        pytest.param(
            {"default_definition": "noop:abc"}, "default_definition", "reference", id="dd-bad-ver"
        ),
    ],
)
def test_queue_field_error_is_400_naming_the_field(
    api: Api, method: str, fault: dict[str, Any], field: str, reason: str
) -> None:
    if method == "POST":
        response = api.post("queues", json={"name": "fresh", **fault})
    else:
        response = api.patch(f"queues/{HELD}", json=fault)
    expect_error(response, 400, field, reason, code=("invalid_request", "invalid_definition"))
    assert api.get("queues/fresh").status_code == 404
    held = api.get(f"queues/{HELD}").json()
    assert (held["paused"], held["max_concurrency"], held["priority"]) == (True, None, 0)
    assert held["default_definition"] == "noop"


def test_patch_with_a_name_is_refused(api: Api) -> None:
    expect_error(api.patch(f"queues/{HELD}", json={"name": "renamed"}), 400, "name", "unknown")


def test_deleting_a_queue_with_a_waiting_job_is_409(api: Api) -> None:
    api.submit_waiting()
    response = api.delete(f"queues/{HELD}")
    expect_error(response, 409, "queue", f"'{HELD}'", "waiting")
    assert api.get(f"queues/{HELD}").json()["current_queue_length"] == 1


def test_deleting_a_queue_with_a_scheduled_job_is_409(api: Api) -> None:
    api.created("queues", {"name": "later"})
    job = api.created(
        "jobs", {"queue": "later", "definition": "noop", "schedule_at": "2999-01-01T00:00:00Z"}
    )
    assert job["status"] == "scheduled"
    expect_error(api.delete("queues/later"), 409, "queue", "'later'")
    assert api.get("queues/later").status_code == 200


def test_deleting_the_default_queue_is_409(api: Api) -> None:
    expect_error(api.delete("queues/default"), 409, "queue", "default")
    assert api.get("queues/default").status_code == 200


# --- query strings, path parameters and headers -------------------------------------------

HUGE_CURSOR = base64.urlsafe_b64encode(b"9" * 30).decode()


@pytest.mark.parametrize(
    ("params", "field", "reason"),
    [
        pytest.param({"status": "bogus"}, "status", "queued", id="status-bogus"),
        pytest.param({"status": "QUEUED"}, "status", "queued", id="status-uppercase"),
        pytest.param({"limit": 0}, "limit", "greater than or equal to 1", id="limit-0"),
        pytest.param({"limit": -1}, "limit", "greater than or equal to 1", id="limit-negative"),
        pytest.param({"limit": 10000}, "limit", "less than or equal to 500", id="limit-10000"),
        pytest.param({"limit": "ten"}, "limit", "integer", id="limit-word"),
        pytest.param({"cursor": "%%%"}, "cursor", "not a cursor", id="cursor-garbage"),
        pytest.param({"cursor": "a"}, "cursor", "not a cursor", id="cursor-short"),
        pytest.param({"cursor": "_w"}, "cursor", "not a cursor", id="cursor-not-utf8"),
        pytest.param({"cursor": HUGE_CURSOR}, "cursor", "not a cursor", id="cursor-huge-number"),
        pytest.param({"fields": "bogus"}, "fields", "unknown field 'bogus'", id="fields-unknown"),
        pytest.param({"fields": "input,id"}, "fields", "unknown field 'id'", id="fields-summary"),
    ],
)
def test_bad_job_list_query_is_400_naming_the_parameter(
    api: Api, params: dict[str, Any], field: str, reason: str
) -> None:
    api.submit_waiting()
    expect_error(api.get("jobs", params=params), 400, field, reason)


@pytest.mark.parametrize(
    ("suffix", "params", "headers", "field"),
    [
        pytest.param("/logs", {"attempt": 0}, {}, "attempt", id="logs-attempt-0"),
        pytest.param("/logs", {"attempt": "one"}, {}, "attempt", id="logs-attempt-word"),
        pytest.param("/logs", {"follow": "perhaps"}, {}, "follow", id="logs-follow"),
        pytest.param("/stream", {}, {"Last-Event-ID": "abc"}, "last-event-id", id="stream-id"),
        pytest.param("/stream", {}, {"Last-Event-ID": "-1"}, "last-event-id", id="stream-neg"),
    ],
)
def test_bad_log_or_stream_parameter_is_400(
    api: Api, suffix: str, params: dict[str, Any], headers: dict[str, str], field: str
) -> None:
    # A finished job, so that a stream or follow wrongly let through still ends.
    job = api.submit_waiting()
    assert api.post(f"jobs/{job['id']}/cancel").status_code == 200
    response = api.get(f"jobs/{job['id']}{suffix}", params=params, headers=headers)
    expect_error(response, 400, field)


def test_non_numeric_definition_version_is_400(api: Api) -> None:
    expect_error(api.get("definitions/noop/versions/latest"), 400, "version", "integer")


# --- definitions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field", "reason"),
    [
        pytest.param({"name": "x1"}, "image", "required", id="missing-image"),
        pytest.param({**NOOP, "imgae": "x"}, "imgae", "unknown field", id="unknown-field"),
        pytest.param({**NOOP, "name": "Hello!"}, "name", "pattern", id="bad-name"),
        pytest.param({**NOOP, "timeout": "soon"}, "timeout", "not a duration", id="bad-timeout"),
        pytest.param({**NOOP, "command": "echo hi"}, "command", "list", id="command-string"),
        pytest.param({**NOOP, "env": {"ORCH_X": "1"}}, "env", "reserved", id="reserved-env"),
        pytest.param({**NOOP, "secrets": ["ORCH_JOB_ID"]}, "secrets", "reserved", id="reserved"),
        pytest.param(
            {**NOOP, "resources": {"memory": "lots"}}, "resources.memory", "size", id="memory"
        ),
        pytest.param(
            {**NOOP, "retry": {"attempts": 0}}, "retry.attempts", "greater", id="attempts-0"
        ),
    ],
)
def test_invalid_definition_is_400_naming_the_field(
    api: Api, spec: dict[str, Any], field: str, reason: str
) -> None:
    response = api.post("definitions", json=spec)
    expect_error(response, 400, field, reason, code="invalid_definition")


def test_definition_with_an_unsupported_content_type_is_400(api: Api) -> None:
    response = api.post(
        "definitions", content=b"name: x\nimage: y\n", headers={"content-type": "text/plain"}
    )
    expect_error(response, 400, "content-type", "application/json", code="invalid_definition")


def test_two_definitions_in_one_request_is_400(api: Api) -> None:
    content = b"name: one\nimage: x\n---\nname: two\nimage: x\n"
    response = api.post("definitions", content=content, headers={"content-type": "text/yaml"})
    expect_error(response, 400, "body", "one definition", code="invalid_definition")


# --- state conflicts --------------------------------------------------------------------------


def test_cancelling_a_cancelled_job_is_409(api: Api) -> None:
    job = api.submit_waiting()
    cancelled = api.post(f"jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    expect_error(api.post(f"jobs/{job['id']}/cancel"), 409, "status", "already cancelled")


def test_cancelling_a_succeeded_job_is_409(api: Api) -> None:
    job = api.created("jobs", {"definition": "noop"})  # the default queue runs it
    done = wait_for(lambda: (j := api.job(job["id"]))["status"] in TERMINAL and j, timeout=60)
    assert done["status"] == "succeeded", done
    expect_error(api.post(f"jobs/{job['id']}/cancel"), 409, "status", "already succeeded")
    assert api.job(job["id"])["status"] == "succeeded"


def test_second_unfinished_job_with_the_same_name_is_409(api: Api) -> None:
    api.submit_waiting(name="nightly")
    response = api.post("jobs", json=with_secret(name="nightly"))
    expect_error(response, 409, "name", "'nightly'", "already exists")
    assert len(api.jobs()) == 1


# --- bodies over the size limit -----------------------------------------------------------

LIMIT = 2048


def _chunks(total: int) -> Iterator[bytes]:
    """A streamed (chunked) JSON body of about ``total`` bytes carrying the canary."""
    yield f'{{"name": "big", "image": "x", "secret_env": {{"T": "{CANARY}"}}, "x": "'.encode()
    for _ in range(total // 512):
        time.sleep(0.001)
        yield b"y" * 512
    yield b'"}'


@pytest.mark.parametrize("path", ["jobs", "definitions"])
@pytest.mark.parametrize("streamed", [False, True], ids=["content-length", "chunked"])
def test_body_over_the_limit_is_413(make_server: Any, path: str, streamed: bool) -> None:
    limited = make_server(max_body_bytes=LIMIT)
    with Api(limited.url, "default", admin_token(limited.settings)) as api:
        check_limit(api, path, streamed)


def check_limit(api: Api, path: str, streamed: bool) -> None:
    """Send ``path`` a body over the limit; expect a 413 and a server unharmed by it."""
    small = api.post("definitions", json={**NOOP, "description": "d" * 1500})
    assert small.status_code == 201, small.text
    if streamed:
        request = api.http.build_request(
            "POST", api.path(path), content=_chunks(4 * LIMIT), headers=JSON
        )
        assert "content-length" not in request.headers
        assert request.headers["transfer-encoding"] == "chunked"
        response = api.http.send(request)
    else:
        response = api.post(path, json=with_secret(definition="noop", input="y" * 4 * LIMIT))
        assert int(response.request.headers["content-length"]) > LIMIT
    expect_error(response, 413, "body", str(LIMIT), "ORCH_MAX_BODY_BYTES")
    # Nothing was stored, and the server still answers, on this client and on a fresh one.
    assert api.jobs() == []
    assert [d["name"] for d in api.get("definitions").json()["items"]] == ["noop"]
    with httpx.Client(base_url=api.url, timeout=30, headers=api.headers) as fresh:
        assert fresh.get(api.path("definitions")).status_code == 200


# --- routes and methods -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/nope"),
        ("GET", "/nope"),
        ("POST", "/v2/projects"),
        ("GET", f"jobs/{UNKNOWN_UUID}/nope"),
        ("GET", "definitions/noop/versions/1/extra"),
    ],
)
def test_unknown_route_is_404_json(api: Api, method: str, path: str) -> None:
    response = api.request(method, path)
    expect_error(response, 404, None, "no such endpoint", api.path(path))


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        pytest.param("DELETE", "jobs", {"GET", "POST"}, id="DELETE jobs"),
        pytest.param("PUT", "/v1/projects", {"GET", "POST"}, id="PUT projects"),
        pytest.param("DELETE", "", {"GET"}, id="DELETE project"),
        pytest.param("POST", f"queues/{HELD}", {"GET", "PATCH", "DELETE"}, id="POST queue"),
        pytest.param("GET", f"jobs/{UNKNOWN_UUID}/cancel", {"POST"}, id="GET cancel"),
        pytest.param("DELETE", "definitions/noop", {"GET"}, id="DELETE definition"),
    ],
)
def test_wrong_method_is_405_json_with_allow(
    api: Api, method: str, path: str, allowed: set[str]
) -> None:
    response = api.request(method, path or f"/v1/projects/{api.project}")
    expect_error(response, 405, None, "method not allowed")
    assert "allow" in response.headers, response.headers
    assert {m.strip() for m in response.headers["allow"].split(",")} >= allowed
