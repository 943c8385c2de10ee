"""``/v1/runners``: the runners sharing this database, and drain requests."""

from __future__ import annotations

from fastapi import APIRouter

from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.errors import responses
from orchestrator.schemas.common import Page
from orchestrator.schemas.runners import RunnerPublic
from orchestrator.services import runners

router = APIRouter(prefix="/v1/runners", tags=["runners"], responses=responses(401))


@router.get("", response_model=Page[RunnerPublic])
def list_runners(services: ServicesDep, actor: ActorDep) -> Page[RunnerPublic]:
    """Every registered runner, by name: where it runs, its capacity, its running jobs, its
    last heartbeat and its state (``active``, ``draining``, ``lost`` or ``stopped``)."""
    with services.db.read() as session:
        views = runners.list_runners(session, services.settings.runner_lease)
    return Page(
        items=[RunnerPublic.from_record(view.record, view.state, view.running) for view in views]
    )


@router.get("/{name}", response_model=RunnerPublic, responses=responses(404))
def get_runner(name: str, services: ServicesDep, actor: ActorDep) -> RunnerPublic:
    """One runner."""
    with services.db.read() as session:
        view = runners.get(session, name, services.settings.runner_lease)
    return RunnerPublic.from_record(view.record, view.state, view.running)


@router.post("/{name}/drain", response_model=RunnerPublic, responses=responses(403, 404, 409))
def drain_runner(name: str, services: ServicesDep, actor: ActorDep) -> RunnerPublic:
    """Make the runner stop claiming, finish its running jobs (up to its drain timeout) and
    exit (admin tokens only)."""
    actor.require_admin()
    with services.db.transaction() as session:
        lease = services.settings.runner_lease
        view = runners.request_drain(session, services.hub, name, lease, actor)
    return RunnerPublic.from_record(view.record, view.state, view.running)
