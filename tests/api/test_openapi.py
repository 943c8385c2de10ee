"""The served OpenAPI document: valid OpenAPI 3.1 (openapi-spec-validator), short unique
operation ids, maps that generators keep, the definition body described by the definition
model; and /docs, whose page loads nothing but what this server serves."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import httpx
import jsonschema
import yaml
from openapi_spec_validator import validate

from orchestrator.api.openapi import SWAGGER_UI
from orchestrator.rules.definition_spec import DefinitionSpec

from ..conftest import LiveServer

ROOT = Path(__file__).resolve().parents[2]
OPERATION_ID = re.compile(r"^[a-z][a-z0-9_]*$")
# The ids clients are written against: changing one breaks them, so it is a decision, not drift.
KEY_OPERATIONS = {
    ("get", "/healthz"): "get_health",
    ("post", "/v1/projects/{project}/definitions"): "register_definition",
    ("get", "/v1/projects/{project}/definitions/{name}"): "get_definition",
    ("post", "/v1/projects/{project}/jobs"): "submit_job",
    ("get", "/v1/projects/{project}/jobs"): "list_jobs",
    ("get", "/v1/projects/{project}/jobs/{job_id}"): "get_job",
    ("post", "/v1/projects/{project}/jobs/{job_id}/cancel"): "cancel_job",
    ("get", "/v1/projects/{project}/jobs/{job_id}/logs"): "get_job_logs",
    ("get", "/v1/projects/{project}/jobs/{job_id}/stream"): "stream_job",
    ("post", "/v1/projects/{project}/queues"): "create_queue",
    ("post", "/v1/projects/{project}/schedules"): "create_schedule",
    ("get", "/v1/projects/{project}/schedules/{name}"): "get_schedule",
    ("post", "/v1/tokens"): "create_token",
    (
        "post",
        "/api/public/organizations/{organization_name}/projects/{project_name}/queues/"
        "{queue_name}/jobs",
    ): "salad_create_queue_job",
    ("post", "/v1/client/job"): "daestro_submit_job",
    ("post", "/jobs"): "quedup_create_job",
}
# (component, property) of every map in a request body, and the pattern of its keys (None:
# any key). A generator keeps the keys only of a map described with additionalProperties.
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
HEADER = r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$"
REQUEST_MAPS = {
    ("JobCreate", "parameters"): NAME,
    ("JobCreate", "env"): NAME,
    ("JobCreate", "secret_env"): NAME,
    ("JobCreate", "metadata"): None,
    ("HttpTarget", "headers"): HEADER,
    ("HttpTarget", "secret_headers"): HEADER,
    ("DefinitionSpec", "parameters"): NAME,
    ("DefinitionSpec", "env"): NAME,
    ("DefinitionSpec", "labels"): None,
    ("DaestroJobCreate", "container_cmd_parameter"): NAME,
    ("DaestroJobCreate", "container_env"): NAME,
    ("QuedupJobCreate", "headers"): HEADER,
    ("QuedupJobUpdate", "headers"): HEADER,
    ("QueueJobPrototype", "metadata"): None,
}


def served_document(server: LiveServer) -> dict[str, Any]:
    """The document as a client gets it: over HTTP, without a token."""
    response = httpx.get(f"{server.url}/openapi.json", timeout=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield method, path, operation


def schemas_in(node: Any) -> Iterator[dict[str, Any]]:
    """Every mapping in ``node``, nested ones included."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from schemas_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from schemas_in(item)


def the_map(schema: dict[str, Any]) -> dict[str, Any]:
    """The object schema of a property (``X | None`` is an anyOf with null)."""
    if "anyOf" in schema:
        (schema,) = [s for s in schema["anyOf"] if s.get("type") != "null"]
    assert schema.get("type") == "object", schema
    return schema


def test_the_served_document_is_valid_openapi_3_1(server: LiveServer) -> None:
    document = served_document(server)
    assert document["openapi"].startswith("3.1.")
    validate(document)  # raises, naming the place, on anything OpenAPI 3.1 does not allow
    # 3.2's streaming keyword, which a 3.1 document may not use (the validator checks the
    # media types it knows; this keeps it out of every other place too).
    assert not [s for s in schemas_in(document) if "itemSchema" in s]


def test_every_schema_has_a_name_of_its_own(server: LiveServer) -> None:
    """Two models of one name (FastAPI then names them by module path, ``a__b__Name``) make
    generators refuse the document: every schema keeps its class's plain name."""
    schemas = served_document(server)["components"]["schemas"]
    assert [name for name in schemas if "__" in name] == []


def test_streams_are_strings_of_their_media_type(server: LiveServer) -> None:
    paths = served_document(server)["paths"]
    job = "/v1/projects/{project}/jobs/{job_id}"
    events = paths[f"{job}/stream"]["get"]["responses"]["200"]
    assert events["content"] == {
        "text/event-stream": {
            "schema": {"type": "string", "description": "A text/event-stream body."}
        }
    }
    assert "Last-Event-ID" in events["description"] and "JobEventPublic" in events["description"]
    logs = paths[f"{job}/logs"]["get"]["responses"]["200"]
    assert logs["content"]["text/plain"] == {"schema": {"type": "string"}}
    assert set(logs["content"]) == {"text/plain", "application/x-ndjson"}
    assert "LogLine" in logs["description"]


def test_operation_ids_are_short_unique_snake_case_and_tagged(server: LiveServer) -> None:
    document = served_document(server)
    ids = [operation["operationId"] for _, _, operation in operations(document)]
    assert len(ids) > 60
    assert len(set(ids)) == len(ids), sorted(i for i in ids if ids.count(i) > 1)
    assert [i for i in ids if not OPERATION_ID.match(i) or len(i) > 40] == []
    found = {
        (method, path): operation["operationId"]
        for method, path, operation in operations(document)
        if (method, path) in KEY_OPERATIONS
    }
    assert found == KEY_OPERATIONS
    # Grouped: every operation under one of the document's tags, the drop-in APIs' under their
    # product's.
    tags = [tag["name"] for tag in document["tags"]]
    assert len(set(tags)) == len(tags) and all(tag["description"] for tag in document["tags"])
    for method, path, operation in operations(document):
        assert len(operation.get("tags", [])) == 1, (method, path)
        assert operation["tags"][0] in tags, (method, path)
        product = operation["operationId"].partition("_")[0]
        if product in ("salad", "daestro", "quedup"):
            assert operation["tags"][0].startswith("compat: "), (method, path)


def test_every_map_is_described_so_generators_keep_its_keys(server: LiveServer) -> None:
    document = served_document(server)
    schemas = document["components"]["schemas"]
    for (component, field), pattern in REQUEST_MAPS.items():
        described = the_map(schemas[component]["properties"][field])
        values = described.get("additionalProperties")
        assert values is True or (isinstance(values, dict) and values), (component, field)
        if pattern is None:
            assert "propertyNames" not in described, (component, field)
        else:
            assert described["propertyNames"]["pattern"] == pattern, (component, field)
    # And nowhere a map a generator would empty: no patternProperties, no object that has no
    # properties yet refuses every other key.
    for schema in schemas_in(schemas):
        assert "patternProperties" not in schema, schema
        if schema.get("type") == "object" and "properties" not in schema:
            assert schema.get("additionalProperties") is not False, schema


def test_the_server_still_refuses_a_name_the_pattern_refuses(server: LiveServer) -> None:
    server.register({"name": "names", "image": "busybox:1.36", "command": ["true"]})
    for field, value in (
        ("env", {"1BAD": "x"}),
        ("secret_env", {"BAD-NAME": "s3cr3t-value"}),
        ("parameters", {"no spaces": 1}),
    ):
        response = server.http.post(
            "/v1/projects/default/jobs", json={"definition": "names", field: value}
        )
        assert response.status_code == 400, response.text
        assert response.json()["field"].startswith(field), response.text


def test_the_definition_body_is_the_definition_model(server: LiveServer) -> None:
    document = served_document(server)
    component = document["components"]["schemas"]["DefinitionSpec"]
    assert set(component["properties"]) == set(DefinitionSpec.model_fields)
    assert sorted(component["required"]) == ["image", "name"]
    assert component["additionalProperties"] is False  # an unknown field is a 400
    reference = {"$ref": "#/components/schemas/DefinitionSpec"}
    definitions = "/v1/projects/{project}/definitions"
    body = document["paths"][definitions]["post"]["requestBody"]["content"]
    assert body == {
        "application/json": {"schema": reference},
        "application/yaml": {"schema": reference},
    }
    batch = document["paths"][f"{definitions}:batch"]["post"]["requestBody"]["content"]
    assert batch["application/json"]["schema"]["properties"]["definitions"]["items"] == reference
    # The schema accepts the shipped definitions (durations and sizes as people write them)
    # and refuses what the server refuses.
    validator = jsonschema.Draft202012Validator({**reference, "components": document["components"]})
    files = sorted((ROOT / "definitions").glob("*.yaml"))
    assert len(files) >= 4
    for path in files:
        for spec in yaml.safe_load_all(path.read_text()):
            assert not list(validator.iter_errors(spec)), path
    written = {"name": "sized", "image": "busybox:1.36", "timeout": "1h30m"}
    written["resources"] = {"memory": "256Mi", "cpus": 0.5, "gpus": "all"}
    assert validator.is_valid(written)
    assert not validator.is_valid({"name": "Bad_Name", "image": "busybox:1.36"})
    assert not validator.is_valid({"name": "typo", "image": "busybox:1.36", "comand": ["x"]})
    assert not validator.is_valid({"name": "keys", "image": "busybox:1.36", "env": {"1X": "y"}})


def assets_of(page: str) -> list[str]:
    """Every URL the page loads: its scripts, style sheets and icons, and the document."""
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", page)
    urls += re.findall(r"""\burl:\s*["']([^"']+)["']""", page)
    return urls


def test_docs_load_only_what_this_server_serves(server: LiveServer) -> None:
    # Without a token, as a browser opens it: the page and all it loads are public.
    with httpx.Client(base_url=server.url, timeout=30) as browser:
        page = browser.get("/docs")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        urls = assets_of(page.text)
        assert {urlparse(u).path.rpartition("/")[2] for u in urls} >= {
            "swagger-ui-bundle.js",
            "swagger-ui.css",
            "favicon-32x32.png",
            "openapi.json",
        }
        # Nothing from another host: no scheme, no //host, anywhere in the page.
        assert not re.search(r"(https?:)?//[a-z0-9]", page.text, re.IGNORECASE), page.text
        for url in urls:
            absolute = urljoin(f"{server.url}/docs", url)
            assert absolute.startswith(f"{server.url}/"), url
            loaded = browser.get(absolute)
            assert loaded.status_code == 200, (url, loaded.status_code)
            name = urlparse(url).path.rpartition("/")[2]
            if name == "openapi.json":
                continue
            # The packaged copy, byte for byte, with the type a browser runs it as.
            assert loaded.content == (SWAGGER_UI / name).read_bytes(), url
            expected = {".js": "javascript", ".css": "text/css", ".png": "image/png"}
            assert expected[Path(name).suffix] in loaded.headers["content-type"], url
        # The style sheet loads nothing either (its images are data: URLs).
        css = (SWAGGER_UI / "swagger-ui.css").read_text()
        assert all(u.strip("'\"").startswith("data:") for u in re.findall(r"url\(([^)]*)\)", css))
        # /redoc would load its script from a CDN: it is not served.
        assert browser.get("/redoc").status_code == 404
        assert browser.get("/v1/projects").status_code == 401


def test_the_packaged_swagger_ui_names_its_version_and_licence() -> None:
    notes = (SWAGGER_UI / "README.md").read_text()
    version = re.search(r"`swagger-ui-dist` \*\*(\d+\.\d+\.\d+)\*\*", notes)
    assert version, "the vendored Swagger UI's README no longer names its version"
    assert "Apache License" in (SWAGGER_UI / "LICENSE").read_text()
    bundle = (SWAGGER_UI / "swagger-ui-bundle.js").read_bytes()
    assert len(bundle) > 1_000_000 and b"SwaggerUIBundle" in bundle
    assert version.group(1).startswith("5.")
