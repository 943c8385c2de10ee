"""What a container is to the engine: the spec the runner asks for, the state Docker reports,
and the labels every container of an installation carries."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

LABEL_PREFIX = "orchestrator."
# Every container an installation makes carries its id (``installation`` table): nothing an
# installation does touches another's containers, even on one engine under one runner name.
INSTALLATION_LABEL = f"{LABEL_PREFIX}installation"
# The project a container, network or volume belongs to.
PROJECT_LABEL = f"{LABEL_PREFIX}project"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one attempt's container; built by the runner."""

    name: str
    image: str
    command: list[str] | None
    env: dict[str, str]
    labels: dict[str, str]
    working_dir: str | None = None
    user: str | None = None
    network: str = "bridge"
    volumes: list[str] = field(default_factory=list)
    privileged: bool = False
    cap_add: list[str] = field(default_factory=list)
    devices: list[str] = field(default_factory=list)
    pid: str | None = None
    ipc: str | None = None
    userns: str | None = None
    cpus: float | None = None
    memory: int | None = None
    pids: int | None = None
    shm_size: int | None = None
    gpus: int | str | None = None
    # The runner's own read-write bind mounts: path in the container -> path on the engine's
    # host. Not the job's ``volumes``, which the policy rules.
    mounts: dict[str, str] = field(default_factory=dict)
    # What the engine makes on demand for the container, labelled ``own_labels`` (a project's
    # network and named volumes): ``network`` itself when ``own_network``, and the named volumes
    # ``own_volumes``. Such a network is found by its labels, never by its name alone.
    own_labels: dict[str, str] = field(default_factory=dict)
    own_network: bool = False
    own_volumes: tuple[str, ...] = ()
    # The runner talks to the container over its network (an HTTP worker): a runner that is
    # itself a container on this engine reaches it on an internal network they share.
    reached_by_runner: bool = False


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
