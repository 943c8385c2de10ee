"""Reconciling an engine with the database: which of the installation's containers no attempt
holds any more, and removing them (with their run directories); and the project networks no
container and no coming attempt needs."""

from __future__ import annotations

import logging
from collections.abc import Callable

from orchestrator.docker.spec import INSTALLATION_LABEL, LABEL_PREFIX, PROJECT_LABEL
from orchestrator.errors import EngineUnavailable, OrchestratorError
from orchestrator.rules.containers import attempt_name
from orchestrator.runner.context import AttemptContext
from orchestrator.services import attempts

logger = logging.getLogger(__name__)


def remove_strays(
    context: AttemptContext, running_keys: Callable[[], set[tuple[str, int]]]
) -> None:
    """Remove the installation's containers whose attempt nobody holds, whatever runner
    started them: their job ended, or it was taken back from a runner that was lost (and
    may have come back under another name). Other installations' containers are never
    touched, nor are containers of attempts another runner still holds. ``running_keys``:
    the attempts of this process, asked after the containers are listed."""
    try:
        containers = context.engine.find_labelled(f"{LABEL_PREFIX}job-id")
    except EngineUnavailable:
        return
    candidates: dict[str, tuple[str, int]] = {}
    legacy: set[str] = set()
    for container_id, labels in containers.items():
        installation = labels.get(INSTALLATION_LABEL)
        if installation is None:
            # Made before installations were labelled: ours only if our database knows
            # its job (checked below), and only where this runner made it.
            if labels.get(f"{LABEL_PREFIX}runner") != context.name:
                continue
            legacy.add(container_id)
        elif installation != context.installation:
            continue
        try:
            attempt = int(labels.get(f"{LABEL_PREFIX}attempt", ""))
        except ValueError:
            continue
        candidates[container_id] = (labels[f"{LABEL_PREFIX}job-id"], attempt)
    if not candidates:
        return
    running = running_keys()
    with context.db.read() as session:
        active = attempts.active_attempts(session)
        known = attempts.existing(session, {candidates[c][0] for c in legacy})
    for container_id, key in candidates.items():
        if key in active or key in running:
            continue
        if container_id in legacy and key[0] not in known:
            continue
        logger.info(
            "removing container %s of job %s attempt %s: no attempt holds it",
            container_id[:12],
            key[0],
            key[1],
            extra={"action": "container_stray_removed", "job_id": key[0]},
        )
        try:
            context.engine.remove(container_id)
        except OrchestratorError as exc:
            logger.warning("could not remove a stray container: %s", exc.message)
            continue
        context.run_dirs.remove(attempt_name(*key))


def remove_idle_networks(context: AttemptContext) -> None:
    """Remove the installation's project networks (and their runner networks) that no
    container of the installation is on and whose project has no job queued, starting or
    running: each takes one of the engine's few address pools (about 30 by default), so a
    network left by every project that ever ran would soon stop any new one from starting.
    The next attempt of the project makes its network again. The engine itself refuses to
    remove a network a container is on; a network lost between a runner finding and joining
    it is made anew (``Engine.create``)."""
    mine = {INSTALLATION_LABEL: context.installation}
    try:
        networks = context.engine.labelled_networks(mine)
        if not networks:
            return
        with context.db.read() as session:
            busy = attempts.busy_projects(session)
        # Listed after the database was read: a container made for a claim committed since
        # is seen here.
        in_use = {
            labels.get(PROJECT_LABEL)
            for labels in context.engine.find_labelled(PROJECT_LABEL).values()
            if labels.get(INSTALLATION_LABEL) == context.installation
        }
        for network_id, labels in networks.items():
            project = labels.get(PROJECT_LABEL)
            if project is None or project in busy or project in in_use:
                continue
            if context.engine.remove_network(network_id):
                logger.info(
                    "removed the idle network %s of project %s",
                    network_id[:12],
                    project,
                    extra={"action": "network_idle_removed"},
                )
    except EngineUnavailable:
        return
