"""Dependency aliases, so a route's signature reads like a sentence; authentication lives here."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from orchestrator import tokens
from orchestrator.errors import Unauthorized
from orchestrator.services import Services
from orchestrator.tokens import Actor

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_services(request: Request) -> Services:
    """The process's services, set up by the app's lifespan."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def presented_token(request: Request) -> str | None:
    """The token of a request: ``Authorization: Bearer`` or (SaladCloud's) ``Salad-Api-Key``."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("salad-api-key", "").strip() or None


def get_actor(request: Request, services: ServicesDep) -> Actor:
    """The token's actor; 401 when the token is missing, unknown or revoked."""
    plain = presented_token(request)
    if plain is None:
        raise Unauthorized(
            "a token is required: send 'Authorization: Bearer <token>'", field="authorization"
        )
    with services.db.read() as session:
        actor = tokens.authenticate(session, plain)
    if actor is None:
        raise Unauthorized("the token is not valid (unknown or revoked)", field="authorization")
    return actor


ActorDep = Annotated[Actor, Depends(get_actor)]


def authorize_project(request: Request, project: str, actor: ActorDep) -> Actor:
    """The actor, if it may act in ``project`` with this request's method (reads are GETs)."""
    actor.check(project, write=request.method not in READ_METHODS)
    return actor


ProjectActorDep = Annotated[Actor, Depends(authorize_project)]
