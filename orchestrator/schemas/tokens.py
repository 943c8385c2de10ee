"""API tokens and the audit trail as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    Field,
    StringConstraints,
)

from orchestrator.rules.fields import (
    Name,
    Text,
)
from orchestrator.rules.roles import Role
from orchestrator.schemas.common import Request
from orchestrator.storage.models import (
    AuditEvent,
    Token,
)


class TokenCreate(Request):
    name: Annotated[Text, StringConstraints(min_length=1, max_length=255)]
    role: Role
    project: Name | None = None


class TokenPublic(BaseModel):
    id: str
    name: str
    role: Role
    project: str | None
    prefix: str
    create_time: datetime
    revoke_time: datetime | None

    @classmethod
    def from_row(cls, row: Token) -> TokenPublic:
        return cls(
            id=row.id,
            name=row.name,
            role=Role(row.role),
            project=row.project,
            prefix=row.prefix,
            create_time=row.create_time,
            revoke_time=row.revoke_time,
        )


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself: shown once, never again.")


class AuditEventPublic(BaseModel):
    id: int
    time: datetime
    project: str | None
    action: str
    resource: str
    actor_id: str | None
    actor_name: str | None
    detail: dict[str, Any]

    @classmethod
    def from_row(cls, row: AuditEvent) -> AuditEventPublic:
        assert row.id is not None
        return cls(
            id=row.id,
            time=row.time,
            project=row.project,
            action=row.action,
            resource=row.resource,
            actor_id=row.actor_id,
            actor_name=row.actor_name,
            detail=row.detail,
        )
