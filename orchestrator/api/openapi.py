"""The OpenAPI document as client generators read it, and ``/docs``, served with no internet.

FastAPI writes the document from the routes; this module owns what is changed there, once for
every router:

- an operation's id is its endpoint function's name (``submit_job``), and on a drop-in API's
  routes the product's name before it (``salad_create_queue_job``): short, stable while the
  function keeps its name, and unique (``tests/api/test_openapi.py`` checks);
- a map whose keys follow a pattern (a job's ``parameters``, ``env`` and ``secret_env``, a
  schedule's ``headers``...) is described with ``additionalProperties`` (the values) and
  ``propertyNames`` (the pattern). Pydantic writes ``patternProperties``, which generators
  ignore: a generated client dropped every key. The models still validate the names;
- the definition body, which the definitions routes parse themselves (JSON or YAML), refers to
  a component made from the definition model (``DefinitionSpec``);
- ``/docs`` is Swagger UI from the copy in ``static/swagger-ui`` (its README names the version),
  not from a CDN, and ``/redoc`` (a CDN's script) is not served.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from orchestrator.rules.definition_spec import DefinitionSpec

SWAGGER_UI = Path(__file__).parent / "static" / "swagger-ui"
# Where the page's script, style sheet and icon are served (public, like /docs).
ASSETS = "/docs/assets"
COMPONENTS = "#/components/schemas/"
# Components the routes refer to by ``component_ref`` rather than by a typed parameter.
EXTRA_MODELS: tuple[type[BaseModel], ...] = (DefinitionSpec,)
# The groups of operations (each router's tag), in the order /docs shows them.
TAGS = [
    {"name": "jobs", "description": "Submit, list, read and cancel jobs; their events and logs."},
    {"name": "definitions", "description": "Register and read job definitions (JSON or YAML)."},
    {"name": "queues", "description": "Queues: priority, concurrency, pause."},
    {"name": "schedules", "description": "Cron and one-shot schedules of jobs and HTTP requests."},
    {"name": "webhooks", "description": "A job's webhook deliveries; the signing secret."},
    {"name": "projects", "description": "Projects and their audit trail."},
    {"name": "tokens", "description": "API tokens (admin only)."},
    {"name": "runners", "description": "The runners and their drain."},
    {"name": "health", "description": "The health check (no token)."},
    {"name": "metrics", "description": "Prometheus metrics (an admin token, or open)."},
    {"name": "compat: SaladCloud", "description": "SaladCloud's Job Queues API, drop-in."},
    {"name": "compat: Daestro", "description": "Daestro's job API, drop-in."},
    {"name": "GA4GH TES", "description": "GA4GH Task Execution Service 1.1: tasks as jobs."},
    {"name": "compat: Quedup", "description": "Quedup's scheduled HTTP jobs API, drop-in."},
]


def operation_id(route: APIRoute) -> str:
    """A route's operation id: its endpoint function's name (``get_job``)."""
    return route.name


def product_operation_id(product: str) -> Callable[[APIRoute], str]:
    """The operation ids of a drop-in API's routes: ``{product}_{function}``, so SaladCloud's
    ``list_queues`` and ours never meet."""

    def generate(route: APIRoute) -> str:
        return f"{product}_{route.name}"

    return generate


def component_ref(model: type[BaseModel]) -> dict[str, str]:
    """A reference to the component of one of ``EXTRA_MODELS`` (a request body's schema)."""
    assert model in EXTRA_MODELS, f"{model.__name__} is not in EXTRA_MODELS"
    return {"$ref": COMPONENTS + model.__name__}


def keep_map_keys(node: Any) -> None:
    """Describe every map keyed by a pattern in ``node`` (a document or a schema, in place) with
    ``additionalProperties`` and ``propertyNames`` instead of ``patternProperties``."""
    if isinstance(node, list):
        for item in node:
            keep_map_keys(item)
        return
    if not isinstance(node, dict):
        return
    patterns = node.get("patternProperties")
    if isinstance(patterns, dict) and len(patterns) == 1 and "properties" not in node:
        ((pattern, values),) = patterns.items()
        del node["patternProperties"]
        node["additionalProperties"] = values
        # Pydantic puts a key's other constraints (a length) in propertyNames already.
        node["propertyNames"] = {**node.get("propertyNames", {}), "pattern": pattern}
    for value in node.values():
        keep_map_keys(value)


def _add_components(document: dict[str, Any]) -> None:
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    for model in EXTRA_MODELS:
        schema = model.model_json_schema(ref_template=COMPONENTS + "{model}", mode="validation")
        for name, component in {**schema.pop("$defs", {}), model.__name__: schema}.items():
            # Two models of one name would describe one of the bodies falsely.
            if _without_null_defaults(schemas.setdefault(name, component)) != (
                _without_null_defaults(component)
            ):
                raise RuntimeError(f"two OpenAPI components are named {name}")


def _without_null_defaults(node: Any) -> Any:
    """``node`` without its ``"default": null`` members, which FastAPI leaves out of the
    schemas it makes and Pydantic keeps: the same model either way."""
    if isinstance(node, list):
        return [_without_null_defaults(item) for item in node]
    if isinstance(node, dict):
        return {
            key: _without_null_defaults(value)
            for key, value in node.items()
            if not (key == "default" and value is None)
        }
    return node


def _finish_document(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI keeps it as app.openapi_schema, so this runs once
        _add_components(document)
        keep_map_keys(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def _serve_docs(app: FastAPI) -> None:
    app.mount(ASSETS, StaticFiles(directory=SWAGGER_UI), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        """Swagger UI on this server's document, every asset from this server."""
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title}: API",
            swagger_js_url=f"{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS}/favicon-32x32.png",
            # No badge from the online validator: the page asks nothing of another host.
            swagger_ui_parameters={"validatorUrl": None},
        )


def install(app: FastAPI) -> None:
    """Finish ``app``'s document as this module says, and serve ``/docs`` from our assets.
    The app is made with ``docs_url=None, redoc_url=None``."""
    _finish_document(app)
    _serve_docs(app)
