"""A TES task as the spec's ``tesTask`` in one of its views, built from the job, its stored
task and its recorded attempts.

``MINIMAL``: ``id`` and ``state``. ``BASIC``: everything but the executors' ``stdout`` and
``stderr``, the inputs' ``content`` and the attempts' ``system_logs``. ``FULL``: everything.
"""

from __future__ import annotations

from typing import Any

from orchestrator.rules.states import JobStatus
from orchestrator.schemas.tes import TesState, TesView
from orchestrator.services.tes_states import state_of
from orchestrator.storage.models import Job, TesAttemptLog

# What the FULL view says of an attempt that ended with no report of its end.
INTERRUPTED = (
    "attempt {attempt} was interrupted by the infrastructure; the task went back to the queue"
)


def task_view(job: Job, logs: list[TesAttemptLog], view: TesView) -> dict[str, Any]:
    """``job`` (a TES task) as ``tesTask`` in ``view``."""
    state = state_of(job)
    if view is TesView.MINIMAL:
        return {"id": job.id, "state": state}
    task = dict(job.container.get("tes", {}))
    full = view is TesView.FULL
    if not full and "inputs" in task:
        task["inputs"] = [
            {key: value for key, value in item.items() if key != "content"}
            for item in task["inputs"]
        ]
    return {
        "id": job.id,
        "state": state,
        **task,
        "logs": [_task_log(job, row, state, full) for row in logs],
        "creation_time": job.create_time.isoformat(),
    }


def _task_log(job: Job, row: TesAttemptLog, state: TesState, full: bool) -> dict[str, Any]:
    """``tesTaskLog`` of one attempt."""
    executors = [
        entry if full else {k: v for k, v in entry.items() if k not in ("stdout", "stderr")}
        for entry in row.executors
    ]
    entry: dict[str, Any] = {
        "logs": executors,
        "metadata": {"attempt": str(row.attempt)},
        "outputs": row.outputs,
    }
    if row.start_time is not None:
        entry["start_time"] = row.start_time.isoformat()
    if row.end_time is not None:
        entry["end_time"] = row.end_time.isoformat()
    if full:
        entry["system_logs"] = _system_logs(job, row, state)
    return entry


def _system_logs(job: Job, row: TesAttemptLog, state: TesState) -> list[str]:
    """The attempt's recorded system logs, and what the job knows that the runner did not
    report: an interruption, or the error of a task that ended in ``SYSTEM_ERROR``."""
    lines = list(row.system_logs)
    last = row.attempt >= job.attempt
    if not last and row.end_time is None:
        lines.append(INTERRUPTED.format(attempt=row.attempt))
    if last and state is TesState.SYSTEM_ERROR and job.status is JobStatus.FAILED:
        said = f"{job.reason or 'failed'}: {job.error}" if job.error else str(job.reason or "")
        if said and said not in lines:
            lines.append(said)
    return lines
