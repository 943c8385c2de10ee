"""Who a TES request is: our bearer token, or HTTP Basic with one of our tokens as the password
(any user name), as many TES clients send credentials. Both go through the same token checks
(unknown or revoked: 401), and a task's project is the token's (``ORCH_TES_PROJECT`` for a
token bound to none)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials

from orchestrator.api.deps import BEARER, READ_METHODS, ServicesDep, token_actor
from orchestrator.errors import Unauthorized
from orchestrator.services.audit import Actor

# Read without refusing (auto_error off): the 401s, with the error body, are ``tes_actor``'s;
# a Basic header that does not decode to 'user:password' is a 401 of FastAPI's.
BASIC = HTTPBasic(
    scheme_name="basicToken",
    auto_error=False,
    description="TES routes only: HTTP Basic with an API token as the password (any user).",
)


async def tes_actor(
    services: ServicesDep,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)],
    basic: Annotated[HTTPBasicCredentials | None, Depends(BASIC)],
) -> Actor:
    """The token's actor, from a bearer token or a Basic password; 401 when there is none or
    it is unknown or revoked."""
    plain = bearer.credentials.strip() if bearer is not None else None
    if not plain and basic is not None:
        plain = basic.password.strip()
    if not plain:
        raise Unauthorized(
            "a token is required: send 'Authorization: Bearer <token>', or HTTP Basic with the "
            "token as the password",
            field="authorization",
        )
    actor = await token_actor(services, plain)
    if actor is None:
        raise Unauthorized("the token is not valid (unknown or revoked)", field="authorization")
    return actor


def tes_project(request: Request, services: ServicesDep, actor: Actor) -> str:
    """The project the request acts in (the token's, else ``ORCH_TES_PROJECT``), checked for
    this request's method: 404 for a project the token cannot see, 403 for a read-only write."""
    project = actor.project or services.settings.tes_project
    actor.check(project, write=request.method not in READ_METHODS)
    return project


TesActorDep = Annotated[Actor, Depends(tes_actor)]
