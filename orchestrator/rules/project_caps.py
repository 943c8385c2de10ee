"""How many schedules, queues, definitions (and versions of one) and tokens a project may hold.

Pure: the services count (inside the creating transaction, under a lock) and ask ``check``;
the refusal (409 ``limit_reached``) names the setting that raises the cap and the number.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from orchestrator.errors import LimitReached


class Capped(StrEnum):
    """What a project's caps bound."""

    SCHEDULES = "schedules"
    QUEUES = "queues"
    DEFINITIONS = "definitions"
    VERSIONS = "versions"  # of one definition
    TOKENS = "tokens"  # active ones; admin tokens count together, as one more group


# The setting of each cap, and what frees room under it.
SETTINGS = {
    Capped.SCHEDULES: "ORCH_MAX_SCHEDULES_PER_PROJECT",
    Capped.QUEUES: "ORCH_MAX_QUEUES_PER_PROJECT",
    Capped.DEFINITIONS: "ORCH_MAX_DEFINITIONS_PER_PROJECT",
    Capped.VERSIONS: "ORCH_MAX_VERSIONS_PER_DEFINITION",
    Capped.TOKENS: "ORCH_MAX_TOKENS_PER_PROJECT",
}
_NOUNS = {Capped.TOKENS: "active tokens"}
_REMEDIES = {
    Capped.SCHEDULES: "delete one first",
    Capped.QUEUES: "delete one first",
    # Definitions are never deleted (jobs keep pointing at their versions).
    Capped.DEFINITIONS: "use an existing name or raise the setting",
    Capped.VERSIONS: "register it under a new name or raise the setting",
    Capped.TOKENS: "revoke one first",
}


@dataclass(frozen=True)
class ProjectCaps:
    """The caps in force (``Settings.project_caps`` reads them); 0 leaves one unbounded."""

    schedules: int = 1000
    queues: int = 100
    definitions: int = 1000
    versions: int = 1000
    tokens: int = 100

    def check(self, capped: Capped, count: int, holder: str) -> None:
        """Refuse one more of ``capped`` when ``holder`` (``project 'x'``, ``definition 'y'``)
        already has ``count`` and the cap is set and reached: ``LimitReached`` (409)."""
        limit: int = getattr(self, capped.value)
        if limit and count >= limit:
            noun = _NOUNS.get(capped, capped.value)
            raise LimitReached(
                f"{holder} has {count} {noun}, the most {SETTINGS[capped]} allows ({limit}): "
                f"{_REMEDIES[capped]}"
            )
