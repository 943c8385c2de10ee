"""Array jobs: the parent's life cycle, the size an array may have, and what each child gets
(its environment and the ``Param::array_index`` / ``Param::array_size`` values).

Pure: the array service (``services.arrays``) applies these. A parent is never run: its status
is derived from its children's, so it moves by its own table, not the runner's life cycle.
"""

from __future__ import annotations

from collections.abc import Mapping

from orchestrator.errors import LimitExceeded
from orchestrator.rules.states import JobStatus

# The smallest array: one child is a job.
MIN_SIZE = 2
# Every child holds a copy of the parent's input and metadata: their JSON times the size may
# be at most this many bytes (64 MiB), so one request cannot make gigabytes of rows.
MAX_COPIED_BYTES = 64 * 1024 * 1024

# The most bytes of children's outputs a parent's output gathers (as a job's own output at
# most, ``ORCH_MAX_OUTPUT_BYTES``'s default): more, and the parent's output stays null.
MAX_GATHERED_OUTPUT_BYTES = 1_048_576

# The substitution values an array's command may use without declaring them.
INDEX_PARAMETER = "array_index"
SIZE_PARAMETER = "array_size"
ARRAY_PARAMETERS = (INDEX_PARAMETER, SIZE_PARAMETER)

# A parent waits (pending for its dependencies, then scheduled or queued) until a child starts,
# runs until every child has ended, then ends; it may end from any of those (all children
# cancelled before starting: failed; a dependency failed: failed with its children).
PARENT_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PENDING: frozenset(
        {JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.SCHEDULED: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
        }
    ),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.RUNNING: frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED}),
}


def parent_can_transition(current: JobStatus, new: JobStatus) -> bool:
    """Whether a parent may go ``current`` -> ``new`` (nothing leaves a terminal state)."""
    return new in PARENT_TRANSITIONS.get(current, frozenset())


def check_size(size: int, max_size: int, copied_bytes: int) -> None:
    """Refuse an array outside ``[MIN_SIZE, max_size]`` (``ORCH_ARRAY_MAX_SIZE``), or whose
    children's copies of the input and metadata (``copied_bytes`` each) pass
    ``MAX_COPIED_BYTES``; the error names ``array.size`` (422)."""
    if not MIN_SIZE <= size <= max_size:
        raise LimitExceeded(
            f"array.size: {size} is out of range: an array has {MIN_SIZE} to {max_size} "
            "children (ORCH_ARRAY_MAX_SIZE)",
            field="array.size",
        )
    if copied_bytes * size > MAX_COPIED_BYTES:
        raise LimitExceeded(
            f"array.size: {size} children each copying {copied_bytes} bytes of input and "
            f"metadata is over {MAX_COPIED_BYTES} bytes: pass a reference to the data instead",
            field="array.size",
        )


def final_status(counts: Mapping[JobStatus, int], cancel_requested: bool) -> JobStatus:
    """A parent's status once every child has ended: cancelled when the parent was
    cancelled, succeeded when every child succeeded, else failed."""
    if cancel_requested:
        return JobStatus.CANCELLED
    if all(status is JobStatus.SUCCEEDED for status, count in counts.items() if count):
        return JobStatus.SUCCEEDED
    return JobStatus.FAILED


def environment(index: int, size: int) -> dict[str, str]:
    """The environment a child's container gets besides the job's own."""
    return {"ORCH_ARRAY_INDEX": str(index), "ORCH_ARRAY_SIZE": str(size)}


def child_values(index: int, size: int) -> dict[str, int]:
    """The substitution values of one child."""
    return {INDEX_PARAMETER: index, SIZE_PARAMETER: size}
