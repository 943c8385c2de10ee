"""The HTTP API: ``create_app(settings)`` builds it; one router per resource."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI

from orchestrator import __version__
from orchestrator.api import (
    console,
    definitions,
    errors,
    health,
    jobs,
    metrics,
    openapi,
    projects,
    queues,
    runners,
    schedules,
    tokens,
    webhooks,
)
from orchestrator.api.compat import daestro, quedup, salad
from orchestrator.api.deps import refuse_nul_characters, refuse_unknown_query
from orchestrator.api.errors import responses
from orchestrator.api.limits import BodySizeLimit
from orchestrator.api.tes import router as tes_router
from orchestrator.config import Settings
from orchestrator.process import Services


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
        # Before any route's own dependencies, so no NUL reaches a lookup; a compat route
        # renders the 400 in its product's shape like any refusal.
        dependencies=[Depends(refuse_nul_characters)],
        # /openapi.json and /docs are public (the README says why); /docs is openapi.py's, from
        # packaged assets. The OAuth2 redirect page would be for a flow this API does not have.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        generate_unique_id_function=openapi.operation_id,
        openapi_tags=openapi.TAGS,
    )
    errors.install(app)
    openapi.install(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(metrics.router, dependencies=[Depends(refuse_unknown_query)])
    for module in (projects, queues, definitions, jobs, tokens, runners, schedules, webhooks):
        app.include_router(
            module.router,
            dependencies=[Depends(refuse_unknown_query)],
            responses=responses(400),
        )
    # The drop-in APIs' operation ids carry their product's name (openapi.py says why).
    for product, compat in (("quedup", quedup), ("daestro", daestro), ("salad", salad)):
        app.include_router(
            compat.router, generate_unique_id_function=openapi.product_operation_id(product)
        )
    app.include_router(tes_router, generate_unique_id_function=openapi.product_operation_id("tes"))
    # The web console under /ui (and / leads there); after errors.install: its error pages
    # answer under /ui only, the API's handlers everywhere else.
    console.install(app)
    return app
