"""Dependency aliases, so a route's signature reads like a sentence; authentication lives here.

The dependencies are async where they do no blocking work: FastAPI runs a sync one in its
thread pool, a hop (and a wake-up of the pool's threads) per dependency and request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.routing import APIRoute
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from orchestrator.errors import InvalidRequest, Unauthorized
from orchestrator.process import Services
from orchestrator.services.audit import Actor

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_services(request: Request) -> Services:
    """The process's services, set up by the app's lifespan."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def refuse_nul_characters(request: Request) -> None:
    """400 naming the path or query parameter whose value holds a NUL character.

    Applied to every route by ``create_app``, before the route's own dependencies: no name or
    id can hold a NUL, and PostgreSQL's text cannot even be compared with one (the lookup would
    fail inside the database: a 500), so such a value is refused alike on both databases.
    Header values never hold one (the HTTP server refuses them); in a body, text fields refuse
    one by their type (``fields.Text``) and JSON documents (``input``, ``metadata``) keep it.
    Async, so as not to cost every request a thread hop.
    """
    for name, value in (*request.path_params.items(), *request.query_params.multi_items()):
        if "\x00" in str(value):
            raise InvalidRequest(f"{name}: must not contain NUL characters", field=name)


# The longest unknown query parameter name an error quotes (characters); the rest is cut.
MAX_QUOTED_NAME = 64


async def refuse_unknown_query(request: Request) -> None:
    """400 naming a query parameter the route does not take, so a misspelt one (``?staus=``,
    ``?dryrun=true``) is an error, not silently ignored (a list unfiltered, a real submit).

    Applied to every native route by ``create_app``; the drop-in APIs keep their products'
    leniency. The names a route takes are read from its own declaration (a few microseconds).
    """
    route = request.scope.get("route")
    if not isinstance(route, APIRoute):
        return
    known = _query_names(route)
    for name in request.query_params:
        if name not in known:
            quoted = name if len(name) <= MAX_QUOTED_NAME else name[:MAX_QUOTED_NAME] + "..."
            takes = ", ".join(sorted(known)) or "none"
            raise InvalidRequest(
                f"{quoted}: unknown query parameter (this endpoint takes: {takes})", field=quoted
            )


def _query_names(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` and its dependencies declare."""
    names: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        names.update(field.alias for field in dependant.query_params)
        pending.extend(dependant.dependencies)
    return frozenset(names)


# Security schemes, so the OpenAPI document says how to present a token. They only read the
# headers (auto_error off): the 401s, with the error body, are get_actor's.
BEARER = HTTPBearer(
    scheme_name="bearerToken",
    auto_error=False,
    description="An API token: `Authorization: Bearer <token>`.",
)
SALAD_API_KEY = APIKeyHeader(
    name="Salad-Api-Key",
    scheme_name="saladApiKey",
    auto_error=False,
    description="An API token, as SaladCloud clients send it.",
)


async def presented_token(
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    salad_api_key: Annotated[str | None, Depends(SALAD_API_KEY)],
) -> str | None:
    """The token of a request: ``Authorization: Bearer`` or (SaladCloud's) ``Salad-Api-Key``."""
    if bearer is not None and bearer.credentials.strip():
        return bearer.credentials.strip()
    return (salad_api_key or "").strip() or None


async def token_actor(services: Services, plain: str) -> Actor | None:
    """The actor of a token, or None when it is unknown or revoked: from the verified-token
    cache when it is there, else read from the database in the thread pool."""
    actor = services.verified_tokens.recent(plain)
    if actor is None:
        actor = await run_in_threadpool(services.verified_tokens.actor, plain)
    return actor


async def get_actor(
    plain: Annotated[str | None, Depends(presented_token)], services: ServicesDep
) -> Actor:
    """The token's actor; 401 when the token is missing, unknown or revoked."""
    if plain is None:
        raise Unauthorized(
            "a token is required: send 'Authorization: Bearer <token>'", field="authorization"
        )
    # Read on its own before the route's transaction (on PostgreSQL just the SELECT's round
    # trip: reads run in autocommit), when it was not verified a moment ago.
    actor = await token_actor(services, plain)
    if actor is None:
        raise Unauthorized("the token is not valid (unknown or revoked)", field="authorization")
    return actor


ActorDep = Annotated[Actor, Depends(get_actor)]


async def authorize_project(request: Request, project: str, actor: ActorDep) -> Actor:
    """The actor, if it may act in ``project`` with this request's method (reads are GETs)."""
    actor.check(project, write=request.method not in READ_METHODS)
    return actor


ProjectActorDep = Annotated[Actor, Depends(authorize_project)]
