"""What an attempt's container is, as plain data: the spec the runner asks the engine for, the
labels every container of an installation carries, the paths of the job's input and output, and
the names of containers, project networks and project volumes.

Pure, so the dry run (``services``) describes a container with the runner's own code without
reaching Docker; the engine facade (``docker/``) takes the spec as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field

LABEL_PREFIX = "orchestrator."
# Every executor container of a GA4GH TES task carries this label (its executor's index) beside
# its job's labels: no sweep or adoption takes it for the job's own container
# (``runner.tes_run``).
TES_EXECUTOR_LABEL = f"{LABEL_PREFIX}tes-executor"
# Every container an installation makes carries its id (``installation`` table): nothing an
# installation does touches another's containers, even on one engine under one runner name.
INSTALLATION_LABEL = f"{LABEL_PREFIX}installation"
# The project a container, network or volume belongs to.
PROJECT_LABEL = f"{LABEL_PREFIX}project"

# Each attempt's own directory in its container, with the job's input and output files.
RUN_DIR = "/run/orchestrator"
INPUT_NAME = "input.json"
OUTPUT_NAME = "output.json"
INPUT_PATH = f"{RUN_DIR}/{INPUT_NAME}"
OUTPUT_PATH = f"{RUN_DIR}/{OUTPUT_NAME}"


def attempt_name(job_id: str, attempt: int) -> str:
    """The name of an attempt's container and of its run directory."""
    return f"orch-{job_id}-{attempt}"


def project_network(installation: str, project: str) -> str:
    """The name of a project's own network on an engine: ``orch-<installation>-<project>``,
    with the installation id's first 12 characters (its labels tell the rest)."""
    return f"orch-{installation[:12]}-{project}"


def project_volume(installation: str, project: str, volume: str) -> str:
    """The engine's name of the project's own volume ``volume``: its network's name, a dot,
    and the name (a project name holds no dot, so no two projects' names meet)."""
    return f"{project_network(installation, project)}.{volume}"


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to create one attempt's container; built by ``services.containers``."""

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
    # The same, read-only.
    read_only_mounts: dict[str, str] = field(default_factory=dict)
    # Its stdin stays open for one client to attach to and feed (``DockerEngine.attach_stdin``);
    # closed when that client closes its side.
    stdin_open: bool = False
    # What the engine makes on demand for the container, labelled ``own_labels`` (a project's
    # network and named volumes): ``network`` itself when ``own_network``, and the named volumes
    # ``own_volumes``. Such a network is found by its labels, never by its name alone.
    own_labels: dict[str, str] = field(default_factory=dict)
    own_network: bool = False
    own_volumes: tuple[str, ...] = ()
    # The runner talks to the container over its network (an HTTP worker): a runner that is
    # itself a container on this engine reaches it on an internal network they share.
    reached_by_runner: bool = False
