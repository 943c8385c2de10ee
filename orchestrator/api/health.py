"""``GET /healthz``: is the database reachable, can the runner reach Docker, and does every
background loop still run."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Response

from orchestrator.api.deps import ServicesDep
from orchestrator.errors import DatabaseUnavailable, EngineUnavailable
from orchestrator.rules.loop_states import LoopState
from orchestrator.schemas.common import Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "The database does not answer."}},
)
def get_health(services: ServicesDep, response: Response) -> Health:
    """200 while the database answers (Docker being down or a loop that died is reported as
    ``degraded``, not fatal); else 503."""
    try:
        with services.db.read() as session:
            session.execute(sa.text("SELECT 1"))
        database = "ok"
    except DatabaseUnavailable:
        database = "unavailable"
    if services.runner is not None:
        status = services.runner.status()
        docker, docker_error, runner = status.docker, status.docker_error, status.state
        down_since = status.docker_unavailable_since
    else:
        runner, down_since = "disabled", None
        try:
            services.engine.ping()
            docker, docker_error = "ok", None
        except EngineUnavailable as exc:
            docker, docker_error = "unavailable", exc.message
    loops = {loop.name: loop.state for loop in services.loops()}
    died = LoopState.DIED in loops.values()
    healthy = database == "ok" and docker == "ok" and not died
    if database != "ok":
        response.status_code = 503
    return Health(
        status="ok" if healthy else "degraded",
        database=database,
        docker=docker,
        docker_error=docker_error,
        docker_unavailable_since=down_since,
        runner=runner,
        loops=loops,
    )
