"""``/v1/tokens``: create, list and revoke API tokens (admin tokens only)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from orchestrator.api.deps import ActorDep, ServicesDep
from orchestrator.api.errors import responses
from orchestrator.schemas.common import Page
from orchestrator.schemas.tokens import TokenCreate, TokenCreated, TokenPublic
from orchestrator.services import tokens

router = APIRouter(prefix="/v1/tokens", tags=["tokens"], responses=responses(401, 403))


@router.post(
    "", status_code=201, response_model=TokenCreated, responses=responses(400, 404, 409, 413)
)
def create_token(
    body: TokenCreate, services: ServicesDep, actor: ActorDep, response: Response
) -> TokenCreated:
    """Create a token; the response is the only place its value ever appears."""
    actor.require_admin()
    with services.db.transaction() as session:
        token, plain = tokens.create(
            session, body.name, body.role, body.project, actor, caps=services.caps
        )
    response.headers["Location"] = f"/v1/tokens/{token.id}"
    return TokenCreated(**TokenPublic.from_row(token).model_dump(), token=plain)


@router.get("", response_model=Page[TokenPublic])
def list_tokens(services: ServicesDep, actor: ActorDep) -> Page[TokenPublic]:
    """Every token (without its value), newest first."""
    actor.require_admin()
    with services.db.read() as session:
        rows = tokens.list_all(session)
    return Page(items=[TokenPublic.from_row(t) for t in rows])


@router.delete("/{token_id}", response_model=TokenPublic, responses=responses(404, 409))
def revoke_token(token_id: str, services: ServicesDep, actor: ActorDep) -> TokenPublic:
    """Revoke a token: it stops working at once."""
    actor.require_admin()
    with services.db.transaction() as session:
        token = tokens.revoke(session, token_id, actor, services.hub)
    return TokenPublic.from_row(token)
