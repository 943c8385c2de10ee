"""Queues: create, update, and what a queue shows (with its waiting and running counts)."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    BaseModel,
)

from orchestrator.rules.fields import (
    Name,
    Text,
)
from orchestrator.schemas.common import Concurrency, Description, DisplayName, Priority, Request
from orchestrator.storage.models import (
    Queue,
)


class QueueCreate(Request):
    name: Name
    display_name: DisplayName = ""
    description: Description = ""
    priority: Priority = 0
    max_concurrency: Concurrency | None = None
    paused: bool = False
    default_definition: Text | None = None


class QueueUpdate(Request):
    display_name: DisplayName | None = None
    description: Description | None = None
    priority: Priority | None = None
    max_concurrency: Concurrency | None = None
    paused: bool | None = None
    default_definition: Text | None = None


class QueuePublic(BaseModel):
    project: str
    name: str
    display_name: str
    description: str
    priority: int
    max_concurrency: int | None
    paused: bool
    default_definition: str | None
    current_queue_length: int
    running: int
    create_time: datetime
    update_time: datetime

    @classmethod
    def from_row(cls, row: Queue, *, waiting: int, running: int) -> QueuePublic:
        return cls(
            project=row.project,
            name=row.name,
            display_name=row.display_name or row.name,
            description=row.description,
            priority=row.priority,
            max_concurrency=row.max_concurrency,
            paused=row.paused,
            default_definition=row.default_definition,
            current_queue_length=waiting,
            running=running,
            create_time=row.create_time,
            update_time=row.update_time,
        )
