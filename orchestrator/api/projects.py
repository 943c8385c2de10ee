"""``/v1/projects``: create and change (admin), list and read projects; a project's audit trail."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.errors import responses
from orchestrator.schemas.common import Page
from orchestrator.schemas.projects import ProjectCreate, ProjectPublic, ProjectUpdate
from orchestrator.schemas.tokens import AuditEventPublic
from orchestrator.services import audit, projects

router = APIRouter(prefix="/v1/projects", tags=["projects"], responses=responses(401))


@router.post(
    "",
    status_code=201,
    response_model=ProjectPublic,
    responses=responses(400, 403, 409, 413),
)
def create_project(
    body: ProjectCreate, services: ServicesDep, actor: ActorDep, response: Response
) -> ProjectPublic:
    """Create a project and its ``default`` queue (admin tokens only)."""
    actor.require_admin()
    with services.db.transaction() as session:
        project = projects.create(session, body.name, body.description, actor)
    response.headers["Location"] = f"/v1/projects/{project.name}"
    return ProjectPublic.from_row(project)


@router.get("", response_model=Page[ProjectPublic])
def list_projects(services: ServicesDep, actor: ActorDep) -> Page[ProjectPublic]:
    """The projects this token can see."""
    with services.db.read() as session:
        rows = projects.list_all(session)
    return Page(items=[ProjectPublic.from_row(p) for p in rows if actor.can_see(p.name)])


@router.get("/{project}", response_model=ProjectPublic, responses=responses(403, 404))
def get_project(project: str, services: ServicesDep, actor: ActorDep) -> ProjectPublic:
    """One project."""
    actor.check(project, write=False)
    with services.db.read() as session:
        return ProjectPublic.from_row(projects.get(session, project))


@router.patch(
    "/{project}",
    response_model=ProjectPublic,
    responses=responses(400, 403, 404, 413),
)
def update_project(
    project: str, body: ProjectUpdate, services: ServicesDep, actor: ActorDep
) -> ProjectPublic:
    """Change a project's description or its retention (admin tokens only); fields left out
    stay, ``"retention": null`` goes back to the server's setting."""
    actor.require_admin()
    changes = body.model_dump(include=body.model_fields_set)
    if changes.get("description", "") is None:
        changes["description"] = ""
    with services.db.transaction() as session:
        row = projects.update(session, project, changes, actor)
    return ProjectPublic.from_row(row)


@router.get(
    "/{project}/audit",
    response_model=Page[AuditEventPublic],
    responses=responses(400, 403, 404),
)
def list_audit_events(
    project: str,
    services: ServicesDep,
    actor: ActorDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Page[AuditEventPublic]:
    """Who registered, created, changed or deleted what in the project, newest first."""
    actor.check(project, write=False)
    with services.db.read() as session:
        projects.get(session, project)
        rows = audit.events(session, project, limit)
    return Page(items=[AuditEventPublic.from_row(e) for e in rows])
