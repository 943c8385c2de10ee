"""The HTTP API: ``create_app(settings)`` builds it; one router per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.api import (
    definitions,
    errors,
    health,
    jobs,
    projects,
    queues,
    runners,
    schedules,
    tokens,
    webhooks,
)
from orchestrator.api.compat import daestro, quedup, salad
from orchestrator.api.limits import BodySizeLimit
from orchestrator.config import Settings
from orchestrator.services import Services


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """The API app; it builds (or takes) the services and runs the runner in its lifespan."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = services or Services.build(settings)
        app.state.services = owned
        owned.start()
        try:
            yield
        finally:
            owned.close()

    app = FastAPI(
        title="orchestrator",
        version=__version__,
        description="Container jobs on your own Docker hosts.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    for module in (
        health,
        projects,
        queues,
        definitions,
        jobs,
        tokens,
        runners,
        schedules,
        webhooks,
        quedup,
        daestro,
        salad,
    ):
        app.include_router(module.router)
    return app
