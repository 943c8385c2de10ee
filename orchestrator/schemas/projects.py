"""Projects: what a create may carry and what a project shows."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    Field,
    StringConstraints,
    WithJsonSchema,
)

from orchestrator.rules.fields import (
    Name,
    Text,
)
from orchestrator.rules.units import MAX_RETENTION_SECONDS, parse_retention
from orchestrator.schemas.common import Request
from orchestrator.storage.models import (
    Project,
)


class ProjectCreate(Request):
    name: Name
    description: Annotated[Text, StringConstraints(max_length=4096)] = ""


RetentionSetting = Annotated[
    float,
    BeforeValidator(parse_retention),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_RETENTION_SECONDS},
                {"type": "string", "pattern": r"^(0|[1-9]\d*(\.\d+)?|([1-9]\d*(ms|s|m|h|d))+)$"},
            ],
            "description": "Seconds, or a duration such as 30d or 12h; 0 keeps everything.",
        },
        mode="validation",
    ),
]


class ProjectUpdate(Request):
    """A merge patch of a project: only the fields given change."""

    description: Annotated[Text, StringConstraints(max_length=4096)] | None = None
    retention: RetentionSetting | None = Field(
        default=None,
        description="How long finished jobs, their logs and schedule runs are kept; "
        "null: the server's ORCH_RETENTION.",
    )


class ProjectPublic(BaseModel):
    name: str
    description: str
    # Seconds; 0 keeps everything; null: the server's ``retention`` setting.
    retention: float | None = None
    create_time: datetime

    @classmethod
    def from_row(cls, row: Project) -> ProjectPublic:
        return cls(
            name=row.name,
            description=row.description,
            retention=row.retention,
            create_time=row.create_time,
        )
