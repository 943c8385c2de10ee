"""The console's definitions (every version, the YAML of each, a diff between two) and runners
(hosts, engine health, capacity, running jobs): read-only pages over the services the API's
``GET`` routes call."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import yaml
from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from orchestrator.api.console.jobs import chosen_project
from orchestrator.api.console.pages import render, see_other
from orchestrator.api.console.session import ConsoleActorDep, FormDep
from orchestrator.api.deps import ServicesDep
from orchestrator.errors import InvalidRequest
from orchestrator.rules.roles import Role
from orchestrator.rules.templating import placeholders
from orchestrator.schemas.jobs import JobCreate
from orchestrator.schemas.runners import RunnerPublic
from orchestrator.services import definitions, jobs, outbound, projects, queues, runners
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
        queue_names = [queue.name for queue in queues.list_all(session, project)]
    context: dict[str, Any] = {
        "project": project,
        "name": name,
        "queues": queue_names,
        "parameters": submit_parameters(shown),
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


def submit_parameters(definition: Definition) -> dict[str, str]:
    """The parameters a submit form asks for: the definition's, with their defaults, and those
    its command names without one (empty: a submit without them is refused, naming them)."""
    spec = definition.spec
    named = {name: "" for name in placeholders(spec.get("command") or [])}
    return {**named, **{name: str(value) for name, value in spec.get("parameters", {}).items()}}


# The form's fields that are not parameters or secrets: ``param.NAME`` and ``secret.NAME`` are.
PARAMETER_PREFIX = "param."
SECRET_PREFIX = "secret."


def _submission(definition: Definition, form: dict[str, str]) -> JobCreate:
    """The submission a definition's form makes: a parameter left at its default is not sent
    (the definition's applies); an empty secret is not sent (the submit names it if needed)."""
    defaults = submit_parameters(definition)
    parameters = {
        key.removeprefix(PARAMETER_PREFIX): value
        for key, value in form.items()
        if key.startswith(PARAMETER_PREFIX) and value != defaults.get(key[len(PARAMETER_PREFIX) :])
    }
    secret_env = {
        key.removeprefix(SECRET_PREFIX): value
        for key, value in form.items()
        if key.startswith(SECRET_PREFIX) and value
    }
    document: Any = None
    if form.get("input", "").strip():
        try:
            document = json.loads(form["input"])
        except json.JSONDecodeError as exc:
            raise InvalidRequest(f"input: not JSON ({exc.msg})", field="input") from None
    try:
        return JobCreate.model_validate(
            {
                "definition": f"{definition.name}:{definition.version}",
                "queue": form.get("queue") or "default",
                "name": form.get("name") or None,
                "parameters": parameters,
                "secret_env": secret_env,
                "input": document,
            }
        )
    except ValidationError as exc:
        # Answered as a bad request body is (a 400 naming the fields, never their values).
        raise RequestValidationError(exc.errors(include_input=False, include_url=False)) from None


@router.post("/projects/{project}/definitions/{name}/submit")
def submit_job(
    project: str,
    name: str,
    services: ServicesDep,
    actor: ConsoleActorDep,
    form: FormDep,
    version: Version = None,
) -> Response:
    """Submit a job of this definition version from its form (as ``POST .../jobs``), then show
    the new job."""
    actor.check(project, write=True)
    with services.db.transaction() as session:
        projects.get(session, project)
        definition = definitions.get(session, project, name, version)
        request = _submission(definition, form)
        outbound.check_submission(services.outbound, request)
        job = jobs.submit(
            session,
            services.box,
            services.hub,
            project,
            request,
            policy=services.policy,
            limits=services.limits,
            actor=actor,
        )
    return see_other(f"/ui/projects/{project}/jobs/{job.id}")


@router.get("/runners", response_class=HTMLResponse)
def runners_page(request: Request, services: ServicesDep, actor: ConsoleActorDep) -> Response:
    """Every runner sharing this database: state, host, engine, capacity and running jobs."""
    with services.db.read() as session:
        views = runners.list_runners(session, services.settings.runner_lease)
    rows = [RunnerPublic.from_record(view.record, view.state, view.running) for view in views]
    context = {"runners": rows, "project": "", "can_drain": actor.role is Role.ADMIN}
    return render(request, "runners.html", context, actor=actor)


@router.post("/runners/{name}/drain")
def drain_runner(
    name: str, services: ServicesDep, actor: ConsoleActorDep, form: FormDep
) -> Response:
    """Ask the runner to stop claiming, finish its jobs and exit (admin only, as
    ``POST /v1/runners/{name}/drain``)."""
    actor.require_admin()
    with services.db.transaction() as session:
        runners.request_drain(session, services.hub, name, services.settings.runner_lease, actor)
    return see_other("/ui/runners")
