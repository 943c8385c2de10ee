"""Projects: what a create may carry and what a project shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    StringConstraints,
)

from orchestrator.rules.fields import (
    Name,
    Text,
)
from orchestrator.schemas.common import Request
from orchestrator.storage.models import (
    Project,
)


class ProjectCreate(Request):
    name: Name
    description: Annotated[Text, StringConstraints(max_length=4096)] = ""


class ProjectPublic(BaseModel):
    name: str
    description: str
    create_time: datetime

    @classmethod
    def from_row(cls, row: Project) -> ProjectPublic:
        return cls(name=row.name, description=row.description, create_time=row.create_time)
