"""The audit trail: who did what, written by services in the transaction that did it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Forbidden, NotFound
from orchestrator.rules.roles import Role
from orchestrator.storage.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """The token behind a request, as recorded on events."""

    token_id: str
    name: str
    role: Role
    project: str | None

    def record(self) -> dict[str, str]:
        """The actor as stored on an event."""
        return {"token_id": self.token_id, "token_name": self.name}

    def can_see(self, project: str) -> bool:
        """Whether the project exists for this token at all."""
        return self.role is Role.ADMIN or self.project == project

    def check(self, project: str, *, write: bool) -> None:
        """Refuse access: 404 for a project the token cannot see, 403 for a read-only write."""
        if not self.can_see(project):
            raise NotFound(f"project '{project}' not found", field="project")
        if write and self.role is Role.READ:
            raise Forbidden("this token is read-only", field="token")

    def require_admin(self) -> None:
        """Refuse anything but an admin token."""
        if self.role is not Role.ADMIN:
            raise Forbidden("this needs an admin token", field="token")


SYSTEM = Actor(token_id="system", name="system", role=Role.ADMIN, project=None)


def record(
    session: Session,
    actor: Actor,
    action: str,
    resource: str,
    project: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Record who did what (never with a secret value in ``detail``)."""
    session.add(
        AuditEvent(
            project=project,
            action=action,
            resource=resource,
            actor_id=actor.token_id,
            actor_name=actor.name,
            detail=detail or {},
        )
    )


def events(session: Session, project: str, limit: int = 100) -> list[AuditEvent]:
    """The project's audit trail, newest first."""
    statement = (
        select(AuditEvent)
        .where(AuditEvent.project == project)
        .order_by(sa.desc(col(AuditEvent.id)))
        .limit(limit)
    )
    return list(session.exec(statement).all())
