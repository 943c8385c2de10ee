"""The TES 1.1 routes (``/ga4gh/tes/v1``): thin, the work is ``services.tes_tasks``'.

Errors are the native ``{code, message, field}`` (the spec defines no error body): bad input is
a 400 naming the field, an unknown task (or another project's) a 404. Unknown query parameters
are ignored, as TES clients send their own (the spec's leniency, like the other drop-in APIs).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from orchestrator import __version__
from orchestrator.api.deps import ServicesDep
from orchestrator.api.error_shapes import TES
from orchestrator.api.errors import responses
from orchestrator.api.tes.auth import TesActorDep, tes_project
from orchestrator.rules.tes_storage import ANY_BUCKET
from orchestrator.schemas.tes import (
    BACKEND_PARAMETERS,
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TesCancelTaskResponse,
    TesCreateTaskResponse,
    TesListTasksResponse,
    TesOrganization,
    TesServiceInfo,
    TesServiceType,
    TesState,
    TesTaskCreate,
    TesView,
)
from orchestrator.services import tes_tasks, tes_views
from orchestrator.services.tes_views import task_view

router = APIRouter(
    prefix=TES.prefix, tags=["GA4GH TES"], responses=responses(400, 401, 403, 404, 409)
)

ViewQuery = Annotated[TesView, Query(description="How much of each task to show.")]
TASK_DOCUMENT: dict[int | str, dict[str, Any]] = {
    200: {"description": "The task (``tesTask``) in the view asked for."}
}


@router.get("/service-info", response_model=TesServiceInfo)
def get_service_info(request: Request, services: ServicesDep, actor: TesActorDep) -> TesServiceInfo:
    """GA4GH service-info of this TES service: its type, name and version, and the storage a
    task's inputs and outputs may use (file:// roots on the runners' hosts, the output root
    being the project's own folder, http(s) inputs, and the S3 buckets configured)."""
    settings = services.settings
    project = tes_project(request, services, actor)
    roots = [*settings.tes_input_roots, settings.resolved_tes_output_root() / project]
    storage = [root.absolute().as_uri() for root in roots]
    storage += ["http://", "https://"]
    storage += [
        "s3://" if bucket == ANY_BUCKET else f"s3://{bucket}/" for bucket in settings.tes_s3_buckets
    ]
    return TesServiceInfo(
        id="org.ga4gh.tes.orchestrator",
        name="orchestrator",
        type=TesServiceType(group="org.ga4gh", artifact="tes", version="1.1.0"),
        description="GA4GH TES on the orchestrator: each task is a job on its Docker hosts.",
        organization=TesOrganization(name="orchestrator", url=settings.url),
        version=__version__,
        storage=storage,
        tesResources_backend_parameters=list(BACKEND_PARAMETERS),
    )


@router.post("/tasks", response_model=TesCreateTaskResponse)
def create_task(
    body: TesTaskCreate, request: Request, services: ServicesDep, actor: TesActorDep
) -> TesCreateTaskResponse:
    """Create a task: a job in the project's TES queue (``ORCH_TES_QUEUE``, made on first use),
    checked against the container policy like any job."""
    project = tes_project(request, services, actor)
    with services.db.transaction() as session:
        job = tes_tasks.create(
            session,
            services.hub,
            project,
            services.settings.tes_queue,
            body,
            policy=services.policy,
            limits=services.limits,
            caps=services.caps,
            storage=services.settings.tes_storage(),
            actor=actor,
        )
        return TesCreateTaskResponse(id=job.id)


@router.get("/tasks", responses={200: {"model": TesListTasksResponse}})
def list_tasks(
    request: Request,
    services: ServicesDep,
    actor: TesActorDep,
    name_prefix: str | None = None,
    state: TesState | None = None,
    tag_key: Annotated[list[str] | None, Query()] = None,
    tag_value: Annotated[list[str] | None, Query()] = None,
    page_size: Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)] = DEFAULT_PAGE_SIZE,
    page_token: str | None = None,
    view: ViewQuery = TesView.MINIMAL,
) -> JSONResponse:
    """The project's tasks, newest first, filtered as the spec says (``tag_key``/``tag_value``
    paired in order; an empty or missing value matches any value of the key)."""
    project = tes_project(request, services, actor)
    wanted = tes_tasks.TaskFilter(
        name_prefix=name_prefix,
        state=state,
        tags=tes_tasks.tag_filter(tag_key or [], tag_value or []),
    )
    limit = services.settings.list_page_max_bytes
    with services.db.read() as session:
        tasks, token = tes_views.listing(
            session, project, wanted, page_size, page_token, view, limit
        )
    body: dict[str, object] = {"tasks": tasks}
    if token is not None:
        body["next_page_token"] = token
    return JSONResponse(body)


@router.get("/tasks/{id}", responses=TASK_DOCUMENT)
def get_task(
    id: str,  # the spec's name
    request: Request,
    services: ServicesDep,
    actor: TesActorDep,
    view: ViewQuery = TesView.MINIMAL,
) -> JSONResponse:
    """One task in the view asked for."""
    project = tes_project(request, services, actor)
    with services.db.read() as session:
        job = tes_tasks.get(session, project, id)
        logs = tes_tasks.attempt_logs(session, [job.id]) if view is not TesView.MINIMAL else {}
        return JSONResponse(task_view(job, logs.get(job.id, []), view))


@router.post("/tasks/{id}:cancel", response_model=TesCancelTaskResponse)
def cancel_task(
    id: str, request: Request, services: ServicesDep, actor: TesActorDep
) -> TesCancelTaskResponse:
    """Cancel a task: a queued one is ``CANCELED`` at once, a running one is ``CANCELING``
    until its runner has stopped it; a finished one stays as it is."""
    project = tes_project(request, services, actor)
    with services.db.transaction() as session:
        tes_tasks.cancel(session, services.hub, project, id, actor)
    return TesCancelTaskResponse()
