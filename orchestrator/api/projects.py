"""``/v1/projects``: create, list and read projects."""

from __future__ import annotations

from fastapi import APIRouter, Response

from orchestrator import projects
from orchestrator.api.deps import ServicesDep
from orchestrator.schemas import Page, ProjectCreate, ProjectPublic

router = APIRouter(prefix="/v1/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectPublic)
def create_project(body: ProjectCreate, services: ServicesDep, response: Response) -> ProjectPublic:
    """Create a project and its ``default`` queue."""
    with services.db.transaction() as session:
        project = projects.create(session, body.name, body.description)
    response.headers["Location"] = f"/v1/projects/{project.name}"
    return ProjectPublic.from_row(project)


@router.get("", response_model=Page[ProjectPublic])
def list_projects(services: ServicesDep) -> Page[ProjectPublic]:
    """Every project."""
    with services.db.read() as session:
        rows = projects.list_all(session)
    return Page(items=[ProjectPublic.from_row(p) for p in rows])


@router.get("/{project}", response_model=ProjectPublic)
def get_project(project: str, services: ServicesDep) -> ProjectPublic:
    """One project."""
    with services.db.read() as session:
        return ProjectPublic.from_row(projects.get(session, project))
