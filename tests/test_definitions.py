"""Job definitions: YAML loading with file:line errors, shipped examples, versions over the API."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.definitions import load_yaml
from orchestrator.errors import DefinitionInvalid

from .conftest import LiveServer

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
name: render
image: busybox:1.36
command: ["echo", "Param::frame"]
parameters:
  frame: 1
resources:
  memory: 256Mi
  cpus: 0.5
timeout: 10m
retry:
  attempts: 3
"""


def error_of(text: str, source: str = "job.yaml") -> str:
    with pytest.raises(DefinitionInvalid) as info:
        load_yaml(text, source)
    return info.value.message


def test_shipped_definitions_load() -> None:
    files = sorted((ROOT / "definitions").glob("*.yaml"))
    names = {spec.name for f in files for spec in load_yaml(f.read_text(), str(f))}
    assert {"hello", "word-count", "use-secret", "flaky"} <= names


def test_normalized_units() -> None:
    (spec,) = load_yaml(GOOD, "render.yaml")
    assert spec.resources.memory == 256 * 2**20
    assert spec.timeout == 600
    assert spec.retry.attempts == 3


@pytest.mark.parametrize(
    ("replace", "by", "expected"),
    [
        ("  cpus: 0.5", "  cpus: lots", "job.yaml:8: resources.cpus:"),
        ("  memory: 256Mi", "  memory: 12Zi", "job.yaml:7: resources.memory: '12Zi' is not a size"),
        ("timeout: 10m", "timeout: soon", "job.yaml:9: timeout:"),
        ("timeout: 10m", "timout: 10m", "job.yaml:9: timout: unknown field"),
        ("  attempts: 3", "  attempts: 0", "job.yaml:11: retry.attempts:"),
        ('command: ["echo", "Param::frame"]', "command: echo hi", "job.yaml:3: command:"),
        ("name: render", "name: Render_Job", "job.yaml:1: name:"),
    ],
)
def test_errors_name_file_line_and_field(replace: str, by: str, expected: str) -> None:
    assert replace in GOOD
    assert expected in error_of(GOOD.replace(replace, by))


def test_missing_required_field() -> None:
    message = error_of("name: x1\ncommand: [echo]\n")
    assert "image: Field required" in message


def test_yaml_syntax_error_names_the_line() -> None:
    assert error_of("name: a1\nimage: [unclosed\n", "broken.yaml").startswith("broken.yaml:")


def test_duplicate_key_is_an_error() -> None:
    assert "job.yaml:3: image: duplicate key" in error_of("name: a1\nimage: x\nimage: y\n")


def test_reserved_env_names_and_labels_are_refused() -> None:
    assert "reserved" in error_of("name: a1\nimage: x\nenv: {ORCH_JOB_ID: x}\n")
    assert "reserved" in error_of("name: a1\nimage: x\nlabels: {orchestrator.job-id: x}\n")


def test_bad_volume_syntax() -> None:
    assert "volumes[0]" in error_of("name: a1\nimage: x\nvolumes: ['just-a-name']\n")


def test_secret_cannot_also_be_plain_env() -> None:
    assert "both a secret and a plain env" in error_of(
        "name: a1\nimage: x\nsecrets: [TOKEN]\nenv: {TOKEN: x}\n"
    )


def test_multi_document_file() -> None:
    specs = load_yaml("name: a1\nimage: x\n---\nname: b2\nimage: y\n", "two.yaml")
    assert [s.name for s in specs] == ["a1", "b2"]


# --- over the API ----------------------------------------------------------------------------


def test_versions_are_immutable(server: LiveServer) -> None:
    base = "/v1/projects/default/definitions"
    spec = {"name": "report", "image": "busybox:1.36", "command": ["echo", "v1"]}
    first = server.http.post(base, json=spec)
    assert first.status_code == 201
    assert first.json()["version"] == 1
    assert first.headers["location"].endswith("/definitions/report/versions/1")

    again = server.http.post(base, json=spec)
    assert again.status_code == 200
    assert again.json()["version"] == 1

    # Same meaning written differently is the same version (units are normalized).
    same = server.http.post(base, json={**spec, "timeout": "1m"})
    assert same.json()["version"] == 2
    assert server.http.post(base, json={**spec, "timeout": 60}).status_code == 200

    changed = server.http.post(base, json={**spec, "command": ["echo", "v2"]})
    assert changed.status_code == 201
    assert changed.json()["version"] == 3

    latest = server.http.get(f"{base}/report").json()
    assert latest["version"] == 3
    assert latest["spec"]["command"] == ["echo", "v2"]
    assert server.http.get(f"{base}/report/versions/1").json()["spec"]["command"] == ["echo", "v1"]
    versions = server.http.get(f"{base}/report/versions").json()["items"]
    assert [v["version"] for v in versions] == [1, 2, 3]
    listed = server.http.get(base).json()["items"]
    assert [(d["name"], d["version"]) for d in listed] == [("report", 3)]


def test_register_yaml_body(server: LiveServer) -> None:
    response = server.http.post(
        "/v1/projects/default/definitions",
        content=GOOD,
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 201, response.text
    assert response.json()["spec"]["resources"]["memory"] == 256 * 2**20


def test_register_yaml_errors_name_line_and_field(server: LiveServer) -> None:
    response = server.http.post(
        "/v1/projects/default/definitions",
        content=GOOD.replace("timeout: 10m", "timeout: forever"),
        headers={"Content-Type": "application/yaml"},
    )
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == "timeout"
    assert "request body:9: timeout:" in body["message"]


def test_register_json_errors(server: LiveServer) -> None:
    base = "/v1/projects/default/definitions"
    bad = server.http.post(base, json={"name": "x1", "image": "busybox", "resources": {"gpu": 1}})
    assert bad.status_code == 400
    assert "resources.gpu: unknown field" in bad.json()["message"]
    broken = server.http.post(
        base, content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert broken.status_code == 400
    text = server.http.post(base, content=b"name: x", headers={"Content-Type": "text/plain"})
    assert text.status_code == 400
    assert "Content-Type" in text.json()["message"]


def test_unknown_definition_and_version_are_404(server: LiveServer) -> None:
    base = "/v1/projects/default/definitions"
    missing = server.http.get(f"{base}/nothing-here")
    assert missing.status_code == 404
    assert "nothing-here" in missing.json()["message"]
    server.register({"name": "one", "image": "busybox:1.36"})
    assert server.http.get(f"{base}/one/versions/9").status_code == 404
    assert server.http.get("/v1/projects/nope/definitions").status_code == 404
