"""This runner's row in the runners registry: its name claimed (or who else holds it), its lease
renewed with its engine's health, its state written, and the jobs of runners whose lease ran
out taken back. The registry's rules are ``services.runners``; this is the runner's side.
"""

from __future__ import annotations

import logging
import threading

from orchestrator.config import Settings
from orchestrator.errors import Conflict, DatabaseUnavailable
from orchestrator.rules.runner_states import RunnerState
from orchestrator.runner.engine_health import EngineHealth
from orchestrator.services import runners
from orchestrator.storage.db import Database
from orchestrator.wakeups.hub import Hub

logger = logging.getLogger(__name__)


class Registration:
    """One runner process's entry in the registry."""

    def __init__(
        self, settings: Settings, db: Database, hub: Hub, identity: runners.Identity
    ) -> None:
        self.settings = settings
        self.db = db
        self.hub = hub
        self.identity = identity
        self.registered = threading.Event()
        # Why the name cannot be had (another live process holds it); None once it is ours.
        self.name_conflict: str | None = None

    def register(self) -> bool:
        """Claim the runner's name in the registry; False while another process holds it."""
        try:
            with self.db.transaction() as session:
                runners.register(session, self.identity, self.settings.runner_lease)
        except Conflict as exc:
            if self.name_conflict != exc.message:
                logger.warning("%s", exc.message, extra={"action": "runner_name_in_use"})
            self.name_conflict = exc.message
            return False
        self.name_conflict = None
        self.registered.set()
        queues = self.identity.queues
        logger.info(
            "runner %s registered (capacity %d, queues %s)",
            self.identity.name,
            self.identity.capacity,
            ",".join(queues) if queues else "all",
            extra={"action": "runner_registered"},
        )
        return True

    def renew(self, health: EngineHealth) -> RunnerState | None:
        """Renew the lease, reporting the engine's health; the state the registry holds, or
        None when another process has taken the name over (this one is no longer
        registered)."""
        with self.db.transaction() as session:
            state = runners.heartbeat(
                session,
                self.identity,
                "ok" if health.ok else "unavailable",
                None if health.ok else health.error,
            )
        if state is None:
            logger.error(
                "another process has taken over the runner name %s; stopping",
                self.identity.name,
                extra={"action": "runner_replaced"},
            )
            self.registered.clear()
        return state

    def take_back_lost(self) -> None:
        """Take back the jobs of every runner whose lease ran out."""
        lease = self.settings.runner_lease
        with self.db.transaction() as session:
            recovered = runners.recover_lost(
                session, self.hub, lease, self.settings.interruption_limit
            )
        for lost, job_ids in recovered.items():
            logger.warning(
                "runner %s is lost (no heartbeat for %g s); took back %d jobs",
                lost,
                lease,
                len(job_ids),
                extra={"action": "runner_lost"},
            )

    def write_state(self, state: RunnerState) -> None:
        """Record the runner's state; a database that does not answer is logged, not raised
        (the lease runs out and the runner reads as lost)."""
        try:
            with self.db.transaction() as session:
                runners.set_state(session, self.identity, state)
        except DatabaseUnavailable as exc:
            logger.warning(
                "could not record the runner's state %s (%s)",
                state,
                exc.reason,
                extra={"action": "runner_state_unrecorded"},
            )
        except Exception:
            logger.exception(
                "could not record the runner's state %s",
                state,
                extra={"action": "runner_state_unrecorded"},
            )
