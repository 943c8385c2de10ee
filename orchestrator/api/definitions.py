"""``/v1/projects/{project}/definitions``: register (JSON or YAML; one, or a batch in one
transaction) and read job definitions. Bodies are parsed in a worker thread: parsing is
CPU-bound, and on the event loop it would hold every other request, ``/healthz`` included."""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.api.openapi import component_ref
from orchestrator.errors import DefinitionInvalid, LimitExceeded
from orchestrator.rules import definition_spec
from orchestrator.schemas.common import Page
from orchestrator.schemas.definitions import DefinitionPublic
from orchestrator.services import definitions, projects

router = APIRouter(
    prefix="/v1/projects/{project}/definitions",
    tags=["definitions"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SOURCE = "request body"
# Definitions one batch may hold: a directory's worth, registered in one transaction whose
# length this bounds.
MAX_BATCH = 1000


class DefinitionRegistered(DefinitionPublic):
    """A version a batch registered: ``created`` when new, else it equals the latest one."""

    created: bool


class DefinitionBatch(BaseModel):
    """What a batch registered, in the order of the request."""

    items: list[DefinitionRegistered]


def _content_type(request: Request) -> str:
    return request.headers.get("content-type", "application/json").split(";")[0].strip()


def _parse(raw: bytes) -> definition_spec.DefinitionSpec:
    """The one spec of a JSON or YAML body; errors about the body as a whole name ``body``."""
    try:
        text = raw.decode()
        # JSON is YAML too, so one loader gives line numbers for both.
        specs = definition_spec.load_yaml(text, SOURCE)
    except UnicodeDecodeError:
        raise DefinitionInvalid(f"{SOURCE}: not UTF-8 text", field="body") from None
    except DefinitionInvalid as exc:
        exc.field = exc.field or "body"
        raise
    if len(specs) != 1:
        raise DefinitionInvalid(
            f"{SOURCE}: one definition per request, found {len(specs)}", field="body"
        )
    return specs[0]


def _parse_batch(raw: bytes) -> list[definition_spec.DefinitionSpec]:
    """The specs of a ``{"definitions": [...]}`` body; an error names the one at fault by its
    index (``definitions[2]: timeout: ...``)."""
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # a UnicodeDecodeError is a ValueError
        raise DefinitionInvalid(f"{SOURCE}: not valid JSON", field="body") from None
    items = body.get("definitions") if isinstance(body, dict) else None
    if not isinstance(items, list) or not items or len(body) != 1:
        raise DefinitionInvalid(
            f'{SOURCE}: must be {{"definitions": [definition, ...]}} with at least one',
            field="definitions",
        )
    if len(items) > MAX_BATCH:
        raise LimitExceeded(
            f"definitions: {len(items)} definitions is over the limit of {MAX_BATCH} per batch",
            field="definitions",
        )
    specs = []
    for index, item in enumerate(items):
        where = f"definitions[{index}]"
        try:
            specs.append(definition_spec.validate_spec(item, where))
        except DefinitionInvalid as exc:
            exc.field = f"{where}.{exc.field}" if exc.field else where
            raise
    return specs


@router.post(
    "",
    status_code=201,
    response_model=DefinitionPublic,
    response_description="A new version",
    responses={
        200: {"model": DefinitionPublic, "description": "Identical to the latest version"},
        **responses(400, 409, 413, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": component_ref(definition_spec.DefinitionSpec)},
                # The YAML text of one definition: the same mapping.
                "application/yaml": {"schema": component_ref(definition_spec.DefinitionSpec)},
            },
        }
    },
)
async def register_definition(
    project: str,
    request: Request,
    services: ServicesDep,
    actor: ProjectActorDep,
    response: Response,
) -> DefinitionPublic:
    """Register a definition: 201 with a new version, or 200 when it equals the latest one."""
    if _content_type(request) not in (*YAML_TYPES, "application/json"):
        raise DefinitionInvalid(
            f"{SOURCE}: Content-Type must be application/json or application/yaml",
            field="content-type",
        )
    raw = await request.body()

    def parse_and_store() -> definitions.Registered:
        spec = _parse(raw)
        with services.db.transaction() as session:
            projects.get(session, project)
            return definitions.register(
                session,
                project,
                spec,
                policy=services.policy,
                limits=services.limits,
                caps=services.caps,
                actor=actor,
            )

    registered = await run_in_threadpool(parse_and_store)
    definition = registered.definition
    response.status_code = 201 if registered.created else 200
    response.headers["Location"] = (
        f"/v1/projects/{project}/definitions/{definition.name}/versions/{definition.version}"
    )
    return DefinitionPublic.from_row(definition)


@router.post(
    ":batch",
    response_model=DefinitionBatch,
    response_description="Every definition registered (each new, or equal to its latest version)",
    responses=responses(400, 409, 413, 422),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["definitions"],
                        "properties": {
                            "definitions": {
                                "type": "array",
                                "minItems": 1,
                                "maxItems": MAX_BATCH,
                                "items": component_ref(definition_spec.DefinitionSpec),
                            }
                        },
                        "additionalProperties": False,
                    }
                }
            },
        }
    },
)
async def register_definitions(
    project: str, request: Request, services: ServicesDep, actor: ProjectActorDep
) -> DefinitionBatch:
    """Register several definitions in one transaction, all or none: any error (invalid, refused
    by the policy, over a limit) names the one at fault and registers none."""
    if _content_type(request) != "application/json":
        raise DefinitionInvalid(
            f"{SOURCE}: Content-Type must be application/json", field="content-type"
        )
    raw = await request.body()

    def parse_and_store() -> list[DefinitionRegistered]:
        specs = _parse_batch(raw)
        with services.db.transaction() as session:
            projects.get(session, project)
            registered = definitions.register_all(
                session,
                project,
                specs,
                policy=services.policy,
                limits=services.limits,
                caps=services.caps,
                actor=actor,
            )
        return [
            DefinitionRegistered(
                **DefinitionPublic.from_row(r.definition).model_dump(), created=r.created
            )
            for r in registered
        ]

    return DefinitionBatch(items=await run_in_threadpool(parse_and_store))


@router.get("", response_model=Page[DefinitionPublic])
def list_definitions(project: str, services: ServicesDep) -> Page[DefinitionPublic]:
    """The latest version of every definition in the project."""
    with services.db.read() as session:
        projects.get(session, project)
        rows = definitions.list_latest(session, project)
    return Page(items=[DefinitionPublic.from_row(d) for d in rows])


@router.get("/{name}", response_model=DefinitionPublic)
def get_definition(project: str, name: str, services: ServicesDep) -> DefinitionPublic:
    """The latest version of a definition."""
    with services.db.read() as session:
        projects.get(session, project)
        return DefinitionPublic.from_row(definitions.get(session, project, name))


@router.get("/{name}/versions", response_model=Page[DefinitionPublic])
def list_definition_versions(
    project: str, name: str, services: ServicesDep
) -> Page[DefinitionPublic]:
    """Every version of a definition, oldest first."""
    with services.db.read() as session:
        projects.get(session, project)
        rows = definitions.list_versions(session, project, name)
    return Page(items=[DefinitionPublic.from_row(d) for d in rows])


@router.get("/{name}/versions/{version}", response_model=DefinitionPublic, responses=responses(400))
def get_definition_version(
    project: str, name: str, version: int, services: ServicesDep
) -> DefinitionPublic:
    """One version of a definition."""
    with services.db.read() as session:
        projects.get(session, project)
        return DefinitionPublic.from_row(definitions.get(session, project, name, version))
