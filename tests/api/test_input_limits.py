"""Limits on input: input and metadata size (413), parameter and env counts (422), name lengths;
each refusal names the field and the setting that raises the limit."""

from __future__ import annotations

from typing import Any

from ..conftest import TEST_IMAGE, LiveServer

JOBS = "/v1/projects/default/jobs"
DEFINITIONS = "/v1/projects/default/definitions"


def expect_limit(response: Any, status: int, field: str, setting: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["field"] == field
    assert setting in body["message"]
    assert body["message"].startswith(f"{field}: ")


def test_input_and_metadata_sizes(make_server: Any) -> None:
    server = make_server(max_input_bytes=2048, max_metadata_bytes=512)
    server.register({"name": "echo", "image": TEST_IMAGE, "command": ["true"]})
    at_limit = {"text": "x" * (2048 - len('{"text":""}'))}
    assert server.submit(definition="echo", input=at_limit)["input"] == at_limit
    over = {"text": "x" * 2048}
    response = server.http.post(JOBS, json={"definition": "echo", "input": over})
    expect_limit(response, 413, "input", "ORCH_MAX_INPUT_BYTES")
    assert "2048" in response.json()["message"]
    # Multi-byte text counts in bytes, as stored.
    response = server.http.post(JOBS, json={"definition": "echo", "input": "é" * 1100})
    expect_limit(response, 413, "input", "ORCH_MAX_INPUT_BYTES")
    response = server.http.post(JOBS, json={"definition": "echo", "metadata": {"note": "y" * 600}})
    expect_limit(response, 413, "metadata", "ORCH_MAX_METADATA_BYTES")
    assert len(server.http.get(JOBS).json()["items"]) == 1


def test_parameter_and_env_counts(make_server: Any) -> None:
    server = make_server(max_parameters=3, max_env=2)
    server.register(
        {
            "name": "counted",
            "image": TEST_IMAGE,
            "command": ["echo", "Param::c"],
            "parameters": {"a": 1, "b": 2},
            "env": {"ONE": "1"},
        }
    )
    # The definition's defaults count: two of its own plus two given is four.
    response = server.http.post(
        JOBS, json={"definition": "counted", "parameters": {"c": 3, "d": 4}}
    )
    expect_limit(response, 422, "parameters", "ORCH_MAX_PARAMETERS")
    assert "with the definition's defaults" in response.json()["message"]
    assert server.submit(definition="counted", parameters={"a": 9, "c": 3})
    # Plain and secret env vars count together.
    response = server.http.post(
        JOBS, json={"definition": "counted", "env": {"TWO": "2"}, "secret_env": {"K": "v"}}
    )
    expect_limit(response, 422, "env", "ORCH_MAX_ENV")
    response = server.http.post(
        DEFINITIONS,
        json={
            "name": "wide",
            "image": TEST_IMAGE,
            "parameters": {"a": 1, "b": 2, "c": 3, "d": 4},
        },
    )
    expect_limit(response, 422, "parameters", "ORCH_MAX_PARAMETERS")
    response = server.http.post(
        DEFINITIONS,
        json={"name": "wide", "image": TEST_IMAGE, "env": {"A": "1"}, "secrets": ["B", "C"]},
    )
    expect_limit(response, 422, "env", "ORCH_MAX_ENV")


def test_name_lengths_are_bounded(server: LiveServer) -> None:
    server.register({"name": "echo", "image": TEST_IMAGE, "command": ["true"]})
    longest = "a" * 63
    assert server.http.post("/v1/projects", json={"name": longest}).status_code == 201
    response = server.http.post("/v1/projects", json={"name": "a" * 64})
    assert response.status_code == 400
    assert response.json()["field"] == "name"
    response = server.http.post(JOBS, json={"definition": "echo", "name": "n" * 256})
    assert response.status_code == 400
    assert response.json()["field"] == "name"
    assert server.submit(definition="echo", name="n" * 255)["name"] == "n" * 255
