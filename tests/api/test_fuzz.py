"""Fuzzed API: schemathesis sends generated requests to every operation in the served OpenAPI
document and checks every response: never a 5xx, a documented status, a body that matches the
documented schema, and a documented content type.

Once per database: a server with a runner seeds a definition, a finished job (with logs and
output), a cancelled job and a token; then a server without a runner on the same database is
fuzzed. Path parameters and a few body fields are often drawn from the seeded names and ids, so
requests get past the 404s to the services; with no runner, the jobs the fuzzer submits stay
queued and start no containers.

Bounded and repeatable: a fixed seed, derandomized generation, ``MAX_EXAMPLES`` per operation
(``ORCH_TEST_FUZZ_EXAMPLES``, 10 by default).
Generated strings may hold NUL characters, except in path parameters, which schemathesis never
fills with one: ``tests/api/test_bad_input.py`` puts a NUL in each path and query parameter of every
operation, on both databases.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis

from ..conftest import TEST_IMAGE, LiveServer

SEED = 20240613
# Per operation, for the fuzzing phase; the coverage phase adds its own cases (its boundary
# values and wrong types, most of the run) whatever this is. CI's 10 keep the suite in its time;
# ORCH_TEST_FUZZ_EXAMPLES=100 is the deep run (the README's test section).
MAX_EXAMPLES = int(os.environ.get("ORCH_TEST_FUZZ_EXAMPLES", "10"))
# A request that gets no answer in time fails its case. The live streams (`/stream` and
# `/logs?follow=true`) end at once here: the seeded jobs are finished, and the fuzzer cannot
# know the ids of the queued jobs it submits.
REQUEST_TIMEOUT = 10.0
# How often a parameter takes a seeded value rather than a generated one: the project nearly
# always (else every request is a 404), the others half of the time.
SEEDED = {"path.project": 0.9}
SEEDED_OTHERS = 0.5

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
)

GREETER = {
    "name": "greeter",
    "image": TEST_IMAGE,
    "command": [
        "sh",
        "-c",
        'echo "hello $1"; echo \'{"n": 1}\' > "$ORCH_OUTPUT"',
        "sh",
        "Param::who",
    ],
    "parameters": {"who": "world"},
}


def _seed(server: LiveServer) -> dict[str, list[Any]]:
    """Make one of each resource on ``server``; the values each parameter may take."""
    server.register(GREETER)
    finished = server.submit(definition="greeter", name="finished")
    assert server.wait_job(finished["id"])["output"] == {"n": 1}
    held = {"paused": True, "default_definition": "greeter"}
    paused = server.http.patch("/v1/projects/default/queues/default", json=held)
    assert paused.status_code == 200, paused.text
    cancelled = server.submit(metadata={"seeded": True})
    assert server.http.post(f"/v1/projects/default/jobs/{cancelled['id']}/cancel").is_success
    token = server.http.post(
        "/v1/tokens", json={"name": "reader", "role": "read", "project": "default"}
    )
    assert token.status_code == 201, token.text
    return {
        "path.project": ["default"],
        "path.name": ["default", "greeter"],
        "path.version": [1],
        "path.job_id": [finished["id"], cancelled["id"]],
        # Never the admin token's id: the fuzzer would revoke its own token.
        "path.token_id": [token.json()["id"]],
        "body.definition": ["greeter", "greeter:1"],
        "body.queue": ["default"],
        "body.default_definition": ["greeter"],
        "body.project": ["default"],
        # The drop-in APIs' names for the same things.
        "path.organization_name": ["acme-corp"],
        "path.project_name": ["default"],
        "path.queue_name": ["default"],
        "path.queue_job_id": [finished["id"], cancelled["id"]],
        "body.job_definition": ["default::greeter:1"],
        "body.job_queue": ["default::default"],
    }


@pytest.fixture
def api_schema(make_server: Callable[..., LiveServer]) -> Iterator[schemathesis.BaseSchema]:
    """The served document of a runner-less server on a seeded database, set up for the fuzzer."""
    seeder = make_server()
    seeded = _seed(seeder)
    seeder.stop()  # else its runner would run what the fuzzer submits to a queue it resumes
    server = make_server(runner_enabled=False)
    config = schemathesis.Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # The token is sent as a header (below); generated credentials would only be
                # more requests down the same 401 path.
                "with-security-parameters": False,
            },
            "base-url": server.url,
            "headers": {"Authorization": server.http.headers["authorization"]},
            "request-timeout": REQUEST_TIMEOUT,
            "checks": {"enabled": False, **{check: {"enabled": True} for check in CHECKS}},
            "dictionaries": {key: {"values": values} for key, values in seeded.items()},
            "parameters": {
                key: {"dictionary": key, "probability": SEEDED.get(key, SEEDED_OTHERS)}
                for key in seeded
            },
        }
    )
    yield schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=config)
    # The seeded values reached the services: some generated submissions were accepted.
    queued = server.http.get("/v1/projects/default/jobs", params={"status": "queued"})
    assert queued.json()["items"], "the fuzzer never submitted a job that was accepted"


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@pytest.mark.timeout(900)  # every operation of the API, one after another
def test_every_operation_answers_as_documented(case: schemathesis.Case) -> None:
    response = case.call_and_validate()
    # 401 is documented, so the checks would let a lost token pass: the fuzzer must be let in.
    assert response.status_code != 401, response.text
