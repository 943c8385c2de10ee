"""TES states read from a job: the one mapping from our status, reason and cancel flag to
``tesState``, and the same mapping as a SQL condition for the list's ``state`` filter.

A job's attempt interrupted by the infrastructure (a runner lost or restarted) goes back to the
queue and shows as ``QUEUED`` again, not ``PREEMPTED``: it runs again without the client doing
anything, and clients (py-tes' ``wait``, Snakemake) stop waiting at any state but ``QUEUED``,
``INITIALIZING`` and ``RUNNING``. The interruption shows in the FULL view's ``logs[]``.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlmodel import col

from orchestrator.rules.reasons import FailureReason
from orchestrator.rules.states import JobStatus
from orchestrator.schemas.tes import TesState
from orchestrator.storage.models import Job

WAITING = (JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.QUEUED)
ACTIVE = (JobStatus.STARTING, JobStatus.RUNNING)


def state_of(job: Job) -> TesState:
    """The TES state of ``job``."""
    status = job.status
    if status in WAITING:
        return TesState.QUEUED
    if status in ACTIVE:
        if job.cancel_requested:
            return TesState.CANCELING
        return TesState.INITIALIZING if status is JobStatus.STARTING else TesState.RUNNING
    if status is JobStatus.SUCCEEDED:
        return TesState.COMPLETE
    if status is JobStatus.CANCELLED:
        return TesState.CANCELED
    if job.reason is FailureReason.EXIT_CODE:
        return TesState.EXECUTOR_ERROR
    return TesState.SYSTEM_ERROR


def condition(state: TesState) -> Any:
    """The jobs in ``state``, as a SQL condition on the jobs table (``state_of`` in SQL)."""
    status = col(Job.status)
    cancelling = col(Job.cancel_requested)
    if state is TesState.QUEUED:
        return status.in_(WAITING)
    if state is TesState.INITIALIZING:
        return sa.and_(status == JobStatus.STARTING, sa.not_(cancelling))
    if state is TesState.RUNNING:
        return sa.and_(status == JobStatus.RUNNING, sa.not_(cancelling))
    if state is TesState.CANCELING:
        return sa.and_(status.in_(ACTIVE), cancelling)
    if state is TesState.COMPLETE:
        return status == JobStatus.SUCCEEDED
    if state is TesState.CANCELED:
        return status == JobStatus.CANCELLED
    if state is TesState.EXECUTOR_ERROR:
        return sa.and_(status == JobStatus.FAILED, col(Job.reason) == FailureReason.EXIT_CODE)
    if state is TesState.SYSTEM_ERROR:
        reason = col(Job.reason)
        return sa.and_(
            status == JobStatus.FAILED,
            sa.or_(reason.is_(None), reason != FailureReason.EXIT_CODE),
        )
    # UNKNOWN, PAUSED, PREEMPTED: no task is ever in them.
    return sa.false()
