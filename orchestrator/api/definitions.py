"""``/v1/projects/{project}/definitions``: register (JSON or YAML) and read job definitions."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from orchestrator import definitions, projects
from orchestrator.api.deps import ProjectActorDep, ServicesDep, authorize_project
from orchestrator.api.errors import responses
from orchestrator.errors import DefinitionInvalid
from orchestrator.schemas import DefinitionPublic, Page

router = APIRouter(
    prefix="/v1/projects/{project}/definitions",
    tags=["definitions"],
    dependencies=[Depends(authorize_project)],
    responses=responses(401, 403, 404),
)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
SOURCE = "request body"


def _parse(raw: bytes) -> list[definitions.DefinitionSpec]:
    """One spec from a JSON or YAML body; errors about the body as a whole name ``body``."""
    try:
        text = raw.decode()
        # JSON is YAML too, so one loader gives line numbers for both.
        specs = definitions.load_yaml(text, SOURCE)
    except UnicodeDecodeError:
        raise DefinitionInvalid(f"{SOURCE}: not UTF-8 text", field="body") from None
    except DefinitionInvalid as exc:
        exc.field = exc.field or "body"
        raise
    if len(specs) != 1:
        raise DefinitionInvalid(
            f"{SOURCE}: one definition per request, found {len(specs)}", field="body"
        )
    return specs


@router.post(
    "",
    status_code=201,
    response_model=DefinitionPublic,
    response_description="A new version",
    responses={
        200: {"model": DefinitionPublic, "description": "Identical to the latest version"},
        **responses(400, 413, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": {"type": "object"}},
                # The YAML text of one definition: a mapping, like the JSON form.
                "application/yaml": {"schema": {"type": "object"}},
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
    content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
    if content_type not in (*YAML_TYPES, "application/json"):
        raise DefinitionInvalid(
            f"{SOURCE}: Content-Type must be application/json or application/yaml",
            field="content-type",
        )
    specs = _parse(await request.body())

    def store() -> definitions.Registered:
        with services.db.transaction() as session:
            projects.get(session, project)
            return definitions.register(
                session,
                project,
                specs[0],
                policy=services.policy,
                limits=services.limits,
                actor=actor,
            )

    registered = await run_in_threadpool(store)
    definition = registered.definition
    response.status_code = 201 if registered.created else 200
    response.headers["Location"] = (
        f"/v1/projects/{project}/definitions/{definition.name}/versions/{definition.version}"
    )
    return DefinitionPublic.from_row(definition)


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
