"""Job definitions: YAML loading with file:line errors, shipped examples, versions over the API."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from orchestrator.errors import DefinitionInvalid
from orchestrator.rules.definition_spec import MAX_YAML_CHARS, load_yaml

from ..conftest import LiveServer, admin_token, bearer, wait_for

ROOT = Path(__file__).resolve().parents[2]
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


DEFINITIONS = "/v1/projects/default/definitions"
YAML = {"Content-Type": "application/yaml"}


def alias_bomb(levels: int) -> str:
    """A "billion laughs" definition: each level a list of nine aliases of the level before, so
    445 bytes (``levels=9``) stand for 9**9 strings, and a walk of the result never ends."""
    lines = ["name: bomb", "image: busybox:1.36", f"l0: &l0 [{','.join(['lol'] * 9)}]"]
    lines += [f"l{n}: &l{n} [{','.join([f'*l{n - 1}'] * 9)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def big_definition(labels: int = 36_000) -> str:
    """A legal definition of about 900 kB (under the body limit), which takes a while to parse."""
    entries = "".join(f"  key-{n:06d}: value-{n:06d}\n" for n in range(labels))
    return f"name: big\nimage: busybox:1.36\nlabels:\n{entries}"


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


def test_anchors_and_aliases_are_refused() -> None:
    refused = "job.yaml:3: definitions may not use YAML anchors or aliases"
    assert error_of(alias_bomb(levels=3)).startswith(refused)
    assert error_of("name: a1\nimage: x\nenv: &common {A: b}\n").startswith(refused)
    merged = "name: a1\nimage: x\nx: &base {A: b}\nenv:\n  <<: *base\n"
    assert error_of(merged).startswith(refused)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ('!!python/object/apply:os.system ["true"]', "!!python/object/apply:os.system"),
        ("!!python/name:os.system", "!!python/name:os.system"),
        ("!foo bar", "!foo"),
        ("!!binary aGVsbG8=", "!!binary"),
    ],
)
def test_unknown_tags_are_refused_with_the_line(value: str, shown: str) -> None:
    message = error_of(f"name: a1\nimage: x\ndescription: {value}\n")
    assert message.startswith(f"job.yaml:3: unknown YAML tag '{shown}'")
    # The tags of plain values are fine.
    (spec,) = load_yaml("name: a1\nimage: x\ndescription: !!str 12\n", "job.yaml")
    assert spec.description == "12"


def test_size_depth_and_odd_keys_are_refused() -> None:
    too_long = GOOD + "#" * MAX_YAML_CHARS
    assert error_of(too_long).startswith(f"job.yaml: {len(too_long)} characters is over the limit")
    deep = error_of("name: a1\nimage: x\nlabels: " + "[" * 100 + "]" * 100 + "\n")
    assert deep == "job.yaml:3: nested deeper than 64 levels"
    assert error_of("name: a1\nimage: x\n? [a, b]\n: 1\n").startswith("job.yaml:3: invalid YAML")


def test_only_the_first_errors_are_named() -> None:
    # Each named error costs a scan for its line: thousands of them once took minutes.
    labels = "".join(f"  key-{n}: [not, text]\n" for n in range(30))
    message = error_of(f"name: a1\nimage: x\nlabels:\n{labels}")
    assert message.startswith("job.yaml:4: labels.key-0: Input should be a valid string; ")
    assert message.count("Input should be a valid string") == 10
    assert message.endswith("; and 20 more errors")


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


def test_an_alias_bomb_is_refused_at_once(server: LiveServer) -> None:
    # Before anchors were refused, this body held the event loop for minutes; the client's
    # timeout is the bound, generous for a loaded machine.
    bomb = alias_bomb(levels=9)
    response = server.http.post(DEFINITIONS, content=bomb, headers=YAML, timeout=30)
    assert response.status_code == 400
    body = response.json()
    assert body["message"].startswith("request body:3: definitions may not use YAML anchors")
    assert body["field"] == "body"


def test_unknown_tags_are_a_400_naming_the_line(server: LiveServer) -> None:
    for value in ('!!python/object/apply:os.system ["true"]', "!foo bar"):
        text = f"name: tagged\nimage: busybox:1.36\ncommand: {value}\n"
        response = server.http.post(DEFINITIONS, content=text, headers=YAML)
        assert response.status_code == 400, response.text
        assert response.json()["message"].startswith("request body:3: unknown YAML tag")


def parsing() -> bool:
    """Whether a thread of this process (where the live server runs) is in ``load_yaml`` now."""
    code = load_yaml.__code__
    for frame in sys._current_frames().values():
        while frame is not None:
            if frame.f_code is code:
                return True
            frame = frame.f_back
    return False


def test_a_parse_does_not_hold_the_event_loop(server: LiveServer) -> None:
    """``/healthz`` answers while a big definition is being parsed: the parse runs in a thread.

    Decided by looking, not by timing: the server's threads are watched until one parses, then
    ``/healthz`` is asked, then whether that parse still runs. Were it on the event loop,
    ``/healthz`` would answer only after it. A parse that ends before ``/healthz`` answers (a
    fast machine) proves nothing, so the test tries again a few times.
    """
    big = big_definition()
    headers = {**bearer(admin_token(server.settings)), **YAML}
    poster = httpx.Client(base_url=server.url, headers=headers, timeout=120)
    with poster, ThreadPoolExecutor(1) as pool:
        for _ in range(5):
            posted = pool.submit(poster.post, DEFINITIONS, content=big)
            wait_for(lambda done=posted.done: parsing() or done(), interval=0.01)
            health = server.http.get("/healthz")
            while_parsing = parsing()
            assert health.status_code == 200, health.text
            assert posted.result().status_code in (200, 201), posted.result().text
            if while_parsing:
                return
    pytest.fail("/healthz never answered while a definition was being parsed")


def test_a_batch_registers_all_or_none(server: LiveServer) -> None:
    batch = f"{DEFINITIONS}:batch"
    one = {"name": "one", "image": "busybox:1.36"}
    two = {"name": "two", "image": "busybox:1.36", "command": ["echo", "two"]}

    refused = server.http.post(batch, json={"definitions": [one, {**two, "privileged": True}]})
    assert refused.status_code == 403
    assert refused.json()["field"] == "definitions[1].privileged"
    assert refused.json()["message"].startswith("definitions[1]: privileged: privileged mode")
    invalid = server.http.post(batch, json={"definitions": [one, {**two, "timeout": "soon"}]})
    assert invalid.status_code == 400
    assert invalid.json()["field"] == "definitions[1].timeout"
    assert invalid.json()["message"].startswith("definitions[1]: timeout: ")
    assert server.http.get(DEFINITIONS).json()["items"] == []

    def registered(definitions: list[dict[str, object]]) -> list[tuple[str, bool]]:
        response = server.http.post(batch, json={"definitions": definitions})
        assert response.status_code == 200, response.text
        return [(d["reference"], d["created"]) for d in response.json()["items"]]

    assert registered([one, two]) == [("one:1", True), ("two:1", True)]
    changed = {**two, "command": ["echo", "2"]}
    assert registered([one, changed]) == [("one:1", False), ("two:2", True)]
    assert server.http.get(f"{DEFINITIONS}/two").json()["spec"]["command"] == ["echo", "2"]

    for body in ({}, {"definitions": []}, {"definitions": [one], "more": 1}, [one]):
        assert server.http.post(batch, json=body).status_code == 400, body
    as_yaml = server.http.post(batch, content=GOOD, headers=YAML)
    assert (as_yaml.status_code, as_yaml.json()["field"]) == (400, "content-type")
