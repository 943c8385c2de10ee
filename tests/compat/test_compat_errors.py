"""Every error under a drop-in API's prefix is in that API's own shape, on SQLite and PostgreSQL:
a body too large (refused by the middleware before routing, and while streamed), an unknown
route, a wrong method, a body that is not JSON, a missing or unknown token, a read-only token,
bad input. Paths outside the prefixes keep the native shape."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.conftest import LiveServer, admin_token, bearer

LIMIT = 4096  # ORCH_MAX_BODY_BYTES of the test server
JSON_TYPE = {"content-type": "application/json"}
SALAD_QUEUES = "/api/public/organizations/acme-corp/projects/default/queues"


@dataclass(frozen=True)
class DropIn:
    """One drop-in API: where it takes a body, a body it accepts (for a read-only token to be
    refused) and one it refuses, an unknown path under its prefix, and a path with its methods."""

    name: str
    media_type: str
    body_path: str
    good_body: dict[str, Any]
    bad_body: dict[str, Any]
    unknown_path: str
    method_path: str
    allowed: set[str]
    # The API's token header for a token.
    present: Callable[[str], dict[str, str]] = bearer

    def message(self, response: httpx.Response, status: int) -> str:
        """Assert the response is this API's error with ``status``; its message."""
        where = f"{self.name}: {response.request.method} {response.request.url.path} -> "
        where += f"{response.status_code} {response.text[:300]}"
        assert response.status_code == status, where
        assert response.headers["content-type"].startswith(self.media_type), where
        body = response.json()
        if self.name == "salad":
            assert set(body) == {"type", "title", "status", "detail"}, where
            assert body["status"] == status and body["title"], where
            text = body["detail"]
        elif self.name == "daestro":
            assert set(body) == {"ok", "message"} and body["ok"] is False, where
            text = body["message"]
        else:
            assert set(body) == {"error"}, where
            text = body["error"]
        assert isinstance(text, str) and text, where
        return text


DROP_INS = [
    DropIn(
        name="salad",
        media_type="application/problem+json",
        body_path=SALAD_QUEUES,
        good_body={"name": "fresh"},
        bad_body={"name": "Bad_Name"},
        unknown_path="/api/public/organizations/acme-corp/nope",
        method_path=SALAD_QUEUES,
        allowed={"GET", "POST"},
        present=lambda token: {"Salad-Api-Key": token},
    ),
    DropIn(
        name="daestro",
        media_type="application/json",
        body_path="/v1/client/job",
        good_body={"job_definition": "default::noop:1", "job_queue": "default::default"},
        bad_body={"job_queue": "default::default"},
        unknown_path="/v1/client/nope",
        method_path="/v1/client/job",
        allowed={"POST"},
    ),
    DropIn(
        name="quedup",
        media_type="application/json",
        body_path="/jobs",
        good_body={"method": "GET", "name": "n", "url": "http://a.example/", "schedule": "@daily"},
        bad_body={"method": "GET", "name": "n", "url": "not a url", "schedule": "@daily"},
        unknown_path="/jobs/job_0123456789abcdef0123456789abcdef/nope",
        method_path="/jobs",
        allowed={"GET", "POST"},
    ),
]


def _chunks(total: int) -> Iterator[bytes]:
    """A JSON body of about ``total`` bytes, sent chunked (no Content-Length)."""
    yield b'{"name": "'
    for _ in range(total // 512):
        yield b"y" * 512
    yield b'"}'


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    """A server without a runner (nothing here runs), with a small body limit."""
    return make_server(runner_enabled=False, max_body_bytes=LIMIT)


def test_every_error_under_a_prefix_is_in_its_apis_shape(server: LiveServer) -> None:
    token = admin_token(server.settings)
    created = server.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    assert created.status_code == 201, created.text
    reader = created.json()["token"]
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for api in DROP_INS:
            admin = api.present(token)
            path = api.body_path

            # 413: refused by the middleware, from the Content-Length, before any route...
            big = {**api.good_body, "padding": "x" * 2 * LIMIT}
            too_large = http.post(path, json=big, headers=admin)
            assert int(too_large.request.headers["content-length"]) > LIMIT
            assert "ORCH_MAX_BODY_BYTES" in api.message(too_large, 413)
            # ... and while it streams in, chunked.
            streamed = http.post(path, content=_chunks(4 * LIMIT), headers=admin | JSON_TYPE)
            assert "transfer-encoding" in streamed.request.headers
            assert "ORCH_MAX_BODY_BYTES" in api.message(streamed, 413)

            # 404: a route that does not exist under the prefix.
            unknown = http.get(api.unknown_path, headers=admin)
            assert api.unknown_path in api.message(unknown, 404)

            # 405, with the methods the path has.
            wrong = http.put(api.method_path, json=api.good_body, headers=admin)
            api.message(wrong, 405)
            assert {m.strip() for m in wrong.headers["allow"].split(",")} == api.allowed

            # 415: a body that is not JSON, whatever it says it is (or says nothing).
            text = json.dumps(api.good_body).encode()
            for kind in ("text/plain", "application/x-www-form-urlencoded", None):
                sent = admin | ({"content-type": kind} if kind else {})
                refused = http.post(path, content=text, headers=sent)
                assert "content-type" in api.message(refused, 415), kind

            # 401 without a token, or with one that is not valid; 403 for a read-only token.
            anonymous = http.post(path, json=api.good_body)
            api.message(anonymous, 401)
            assert anonymous.headers["www-authenticate"]
            api.message(http.post(path, json=api.good_body, headers=api.present("nope")), 401)
            api.message(http.post(path, json=api.good_body, headers=api.present(reader)), 403)

            # 400 for bad input.
            api.message(http.post(path, json=api.bad_body, headers=admin), 400)

        # Nothing was made by any of it.
        listed = http.get(SALAD_QUEUES, headers={"Salad-Api-Key": token}).json()["items"]
        assert "fresh" not in [queue["name"] for queue in listed]
        assert http.get("/jobs", headers=bearer(token)).json() == []

        # Outside the prefixes (a longer word is not a prefix), the native shape.
        for native in ("/jobsx", "/v1/clientx/job", "/api/publicity"):
            answer = http.post(native, json={}, headers=bearer(token))
            assert answer.status_code == 404, native
            assert set(answer.json()) == {"code", "message", "field"}, native
        native_big = http.post(
            "/v1/projects/default/jobs", json={"padding": "x" * 2 * LIMIT}, headers=bearer(token)
        )
        assert native_big.status_code == 413
        assert native_big.json()["code"] == "payload_too_large"
