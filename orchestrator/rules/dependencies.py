"""Job dependencies as pure decisions: the vocabulary of ``depends_on``, what a dependency's end
does to a job waiting for it, and how an input names its dependencies' outputs.

``services.dependencies`` applies these in the transaction where a dependency ends.
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

from orchestrator.errors import InvalidRequest
from orchestrator.rules.states import JobStatus

# The most dependencies one job may have (AWS Batch's limit).
MAX_DEPENDENCIES = 20


class Condition(StrEnum):
    """What a dependency must come to for its dependent to run (``depends_on[].on``)."""

    # It must succeed: failed or cancelled, it fails the dependent (``dependency_failed``).
    SUCCEEDED = "succeeded"
    # Any end releases the dependent.
    FINISHED = "finished"


class DependencyType(StrEnum):
    """An array dependency's form (``depends_on[].type``); a plain job's dependency has none."""

    N_TO_N = "N_TO_N"
    SEQUENTIAL = "SEQUENTIAL"


def releases(condition: Condition, ended: JobStatus) -> bool:
    """Whether a dependency that ended ``ended`` lets a job waiting on ``condition`` go on
    (False: the job fails with ``dependency_failed``)."""
    return condition is Condition.FINISHED or ended is JobStatus.SUCCEEDED


def input_sources(document: Any, dependencies: Collection[str]) -> list[str] | None:
    """The dependencies whose outputs make a job's input, when ``document`` is
    ``{"from": [ids]}`` and the job has ``dependencies``; None when the input is the job's own.
    An id that is not among ``dependencies`` is refused naming ``input.from`` (400)."""
    if not dependencies or not isinstance(document, dict) or set(document) != {"from"}:
        return None
    sources = document["from"]
    if not isinstance(sources, list) or not all(isinstance(item, str) for item in sources):
        raise InvalidRequest("input.from: must be a list of job ids", field="input.from")
    for source in sources:
        if source not in dependencies:
            raise InvalidRequest(
                f"input.from: job '{source}' is not among the job's depends_on; a job reads "
                "only the outputs of jobs it depends on",
                field="input.from",
            )
    if len(set(sources)) != len(sources):
        raise InvalidRequest("input.from: a job is named twice", field="input.from")
    return sources
