"""What an attempt uses of its runner, handed to it explicitly (never the runner itself)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.config import Settings
from orchestrator.docker.engine import DockerEngine
from orchestrator.rules.policy import ContainerPolicy
from orchestrator.runner.run_dirs import RunDirs
from orchestrator.runner.tes_files import TesFileSettings
from orchestrator.runner.worker_pools import WorkerPools
from orchestrator.storage.db import Database
from orchestrator.storage.secret_box import SecretBox
from orchestrator.wakeups.hub import Hub


@dataclass(frozen=True)
class AttemptContext:
    """The runner's parts an attempt works with; ``name`` is the runner's, ``engine_lost`` tells
    the runner its engine stopped answering."""

    settings: Settings
    db: Database
    hub: Hub
    box: SecretBox
    policy: ContainerPolicy
    engine: DockerEngine
    name: str
    installation: str
    run_dirs: RunDirs
    workers: WorkerPools
    engine_lost: Callable[[str], None]
    # Where a TES task's files may come from and go to, and how it downloads them.
    tes_files: TesFileSettings
