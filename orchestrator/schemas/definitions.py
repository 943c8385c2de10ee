"""Definition versions as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
)

from orchestrator.storage.models import (
    Definition,
)


class DefinitionPublic(BaseModel):
    project: str
    name: str
    version: int
    reference: str
    spec: dict[str, Any]
    create_time: datetime

    @classmethod
    def from_row(cls, row: Definition) -> DefinitionPublic:
        return cls(
            project=row.project,
            name=row.name,
            version=row.version,
            reference=f"{row.name}:{row.version}",
            spec=row.spec,
            create_time=row.create_time,
        )


# The OpenAPI document shows what the before-validators accept, not just the Python type.
