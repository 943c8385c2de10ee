"""A TES task as the spec's ``tesTask`` in one of its views, built from the job, its stored
task and its recorded attempts.

``MINIMAL``: ``id`` and ``state``. ``BASIC``: everything but the executors' ``stdout`` and
``stderr``, the inputs' ``content`` and the attempts' ``system_logs``. ``FULL``: everything.
"""

from __future__ import annotations

import json
from typing import Any

from sqlmodel import Session

from orchestrator.rules.states import JobStatus
from orchestrator.schemas.tes import TesState, TesView
from orchestrator.services import tes_tasks
from orchestrator.services.tes_states import state_of
from orchestrator.storage.models import Job, TesAttemptLog

# Tasks read from the database at a time while a list page is built: a task may hold up to a
# request's worth of input content, so a page is read in small steps and cut by its size.
LIST_STEP = 20

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


def listing(
    session: Session,
    project: str,
    wanted: tes_tasks.TaskFilter,
    size: int,
    token: str | None,
    view: TesView,
    max_bytes: int,
) -> tuple[list[dict[str, Any]], str | None]:
    """A page of the project's tasks in ``view`` and the next page's token (None: the last).
    The page holds at most ``size`` tasks and stops early, its token naming the next task, once
    its JSON would pass ``max_bytes`` (``ORCH_LIST_PAGE_MAX_BYTES``): a FULL page of 2,047
    tasks with their inputs and logs could otherwise take gigabytes. It always holds a task."""
    tasks: list[dict[str, Any]] = []
    spent = 0
    cursor = token
    while len(tasks) < size:
        rows, following = tes_tasks.page(
            session, project, wanted, min(LIST_STEP, size - len(tasks)), cursor
        )
        shown = [row.id for row in rows] if view is not TesView.MINIMAL else []
        logs = tes_tasks.attempt_logs(session, shown)
        for row in rows:
            task = task_view(row, logs.get(row.id, []), view)
            cost = len(json.dumps(task))
            if tasks and spent + cost > max_bytes:
                return tasks, cursor
            tasks.append(task)
            spent += cost
            assert row.seq is not None
            cursor = tes_tasks.encode_page_token(row.seq)
        session.expunge_all()
        if following is None:
            return tasks, None
        cursor = following
    return tasks, cursor


def _task_log(job: Job, row: TesAttemptLog, state: TesState, full: bool) -> dict[str, Any]:
    """``tesTaskLog`` of one attempt."""
    # An executor's log appears once it ended: the spec requires its ``exit_code``.
    executors = [
        entry if full else {k: v for k, v in entry.items() if k not in ("stdout", "stderr")}
        for entry in row.executors
        if "exit_code" in entry
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
