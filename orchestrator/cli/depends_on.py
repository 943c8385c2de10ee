"""``--depends-on`` for ``submit``, and how ``jobs get`` shows a job's dependencies."""

from __future__ import annotations

from typing import Any

from orchestrator.rules.dependencies import Condition, DependencyType

CONDITIONS = {condition.value for condition in Condition}
TYPES = {kind.value for kind in DependencyType}


def depends_on_option(values: list[str] | None) -> list[dict[str, str]]:
    """``depends_on`` from ``--depends-on ID[:TYPE][:ON]`` values: the job's id, then an
    optional ``N_TO_N`` and an optional ``succeeded`` (the default) or ``finished``; or
    ``SEQUENTIAL[:ON]`` alone (an array's children one after another). An id may hold colons
    itself (``parent:3``): only known words at the end are taken off it. The server checks the
    rest and names what it refuses."""
    entries = []
    for value in values or ():
        parts = value.split(":")
        entry: dict[str, str] = {}
        if len(parts) > 1 and parts[-1] in CONDITIONS:
            entry["on"] = parts.pop()
        if parts == [DependencyType.SEQUENTIAL.value]:
            entries.append({"type": parts[0], **entry})
            continue
        if len(parts) > 1 and parts[-1] in TYPES:
            entry["type"] = parts.pop()
        entries.append({"job": ":".join(parts), **entry})
    return entries


def shown(job: dict[str, Any]) -> dict[str, Any]:
    """The job with its ``depends_on`` as one line, ``ID (on: status), ...`` (``deleted`` for a
    dependency no longer kept)."""
    links = job.get("depends_on")
    if not links:
        return {**job, "depends_on": None}
    line = ", ".join(
        f"{link['job']}{':' + link['type'] if link.get('type') else ''} "
        f"({link['on']}: {link['status'] or 'deleted'})"
        for link in links
    )
    return {**job, "depends_on": line}
