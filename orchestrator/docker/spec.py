"""What a container is to the engine: the spec the runner asks for (``rules.containers``, pure
so a dry run can describe one without Docker), the state Docker reports, and the labels every
container of an installation carries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from orchestrator.rules.containers import (
    INSTALLATION_LABEL,
    LABEL_PREFIX,
    PROJECT_LABEL,
    TES_EXECUTOR_LABEL,
    ContainerSpec,
)

__all__ = [
    "INSTALLATION_LABEL",
    "LABEL_PREFIX",
    "PROJECT_LABEL",
    "TES_EXECUTOR_LABEL",
    "ContainerSpec",
    "ContainerState",
]


@dataclass(frozen=True)
class ContainerState:
    """What Docker says about a container."""

    id: str
    running: bool
    exit_code: int | None
    oom_killed: bool
    labels: dict[str, str]
    # Docker's word: created (never started), running, paused, restarting, removing, exited
    # or dead.
    status: str = "unknown"
    # When it last started; None if it never did.
    started_at: datetime | None = None

    @property
    def never_started(self) -> bool:
        """Whether the container was created and never started."""
        return self.status == "created"
