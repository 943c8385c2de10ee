"""The console's definitions (every version, the YAML of each, a diff between two) and runners
(hosts, engine health, capacity, running jobs): read-only pages over the services the API's
``GET`` routes call."""

from __future__ import annotations

import difflib
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from orchestrator.api.console.jobs import chosen_project
from orchestrator.api.console.pages import render
from orchestrator.api.console.session import ConsoleActorDep
from orchestrator.api.deps import ServicesDep
from orchestrator.schemas.runners import RunnerPublic
from orchestrator.services import definitions, projects, runners
from orchestrator.storage.models import Definition

router = APIRouter(prefix="/ui", include_in_schema=False)

Version = Annotated[int | None, Query(ge=1, le=2**31 - 1)]


def _yaml(definition: Definition) -> str:
    """A version's spec as YAML, as ``orchestrator definitions get`` prints it."""
    return yaml.safe_dump(definition.spec, sort_keys=False, allow_unicode=True)


@router.get("/definitions", response_class=HTMLResponse)
def definitions_page(
    request: Request,
    services: ServicesDep,
    actor: ConsoleActorDep,
    project: Annotated[str, Query(max_length=300)] = "",
) -> Response:
    """The latest version of each of a project's definitions."""
    with services.db.read() as session:
        project, seen = chosen_project(session, actor, project)
        rows = definitions.list_latest(session, project)
    context = {"project": project, "projects": seen, "definitions": rows}
    return render(request, "definitions.html", context, actor=actor)


@router.get("/projects/{project}/definitions/{name}", response_class=HTMLResponse)
def definition_page(
    request: Request,
    project: str,
    name: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    version: Version = None,
    compare: Version = None,
) -> Response:
    """A definition's versions, one version's YAML (the latest by default), and its diff from
    the version ``compare`` if given."""
    actor.check(project, write=False)
    with services.db.read() as session:
        projects.get(session, project)
        versions = definitions.list_versions(session, project, name)
        shown = definitions.get(session, project, name, version)
        other = definitions.get(session, project, name, compare) if compare else None
    context: dict[str, Any] = {
        "project": project,
        "name": name,
        "versions": versions,
        "shown": shown,
        "yaml": _yaml(shown),
        "compare": other,
        "diff": None,
    }
    if other is not None:
        context["diff"] = list(
            difflib.unified_diff(
                _yaml(other).splitlines(),
                context["yaml"].splitlines(),
                f"{name}:{other.version}",
                f"{name}:{shown.version}",
                lineterm="",
            )
        )
    return render(request, "definition.html", context, actor=actor)


@router.get("/runners", response_class=HTMLResponse)
def runners_page(request: Request, services: ServicesDep, actor: ConsoleActorDep) -> Response:
    """Every runner sharing this database: state, host, engine, capacity and running jobs."""
    with services.db.read() as session:
        views = runners.list_runners(session, services.settings.runner_lease)
    rows = [RunnerPublic.from_record(view.record, view.state, view.running) for view in views]
    return render(request, "runners.html", {"runners": rows, "project": ""}, actor=actor)
