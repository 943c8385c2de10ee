"""Runners as ``GET /v1/runners`` shows them."""

from __future__ import annotations

from datetime import datetime

from pydantic import (
    BaseModel,
)

from orchestrator.rules.runner_states import RunnerState
from orchestrator.storage.models import (
    RunnerRecord,
)


class RunnerPublic(BaseModel):
    name: str
    state: str
    hostname: str
    pid: int
    docker_host: str
    docker: str
    docker_error: str | None
    capacity: int
    running: int
    queues: list[str] | None
    version: str
    start_time: datetime
    heartbeat_time: datetime

    @classmethod
    def from_record(cls, row: RunnerRecord, state: RunnerState, running: int) -> RunnerPublic:
        """The API shape of a runner's row, its reported state and its running count."""
        return cls(
            name=row.name,
            state=state,
            hostname=row.hostname,
            pid=row.pid,
            docker_host=row.docker_host,
            docker=row.docker,
            docker_error=row.docker_error,
            capacity=row.capacity,
            running=running,
            queues=row.queues,
            version=row.version,
            start_time=row.start_time,
            heartbeat_time=row.heartbeat_time,
        )
