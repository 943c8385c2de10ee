"""Why an attempt did not succeed: one closed vocabulary, shown on the job, its events, its
webhook, the CLI and the drop-in APIs, and matched by retry rules (``retry.on``).

Pure vocabulary: who sets each reason is said in its description; ``decide`` (services) uses
``counts``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureReason(StrEnum):
    """Why an attempt (or a job that never got one) did not succeed."""

    EXIT_CODE = "exit_code"
    OOM_KILLED = "oom_killed"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    IMAGE_MISSING = "image_missing"
    CREATE_FAILED = "create_failed"
    OUTPUT_INVALID = "output_invalid"
    INPUT_TOO_LARGE = "input_too_large"
    POLICY_REFUSED = "policy_refused"
    ENGINE_UNAVAILABLE = "engine_unavailable"
    RUNNER_LOST = "runner_lost"
    RUNNER_STOPPED = "runner_stopped"
    RUNNER_ERROR = "runner_error"
    CONTAINER_VANISHED = "container_vanished"
    CONTAINER_KILLED = "container_killed"
    WORKER_FAILED = "worker_failed"
    DEPENDENCY_FAILED = "dependency_failed"


@dataclass(frozen=True)
class ReasonDoc:
    """What causes a reason, and whether an attempt ending with it counts against the retry
    policy's ``attempts`` (an interruption by the infrastructure does not: it is retried up to
    ``ORCH_INTERRUPTION_LIMIT`` times without counting)."""

    cause: str
    counts: bool


REASONS: dict[FailureReason, ReasonDoc] = {
    FailureReason.EXIT_CODE: ReasonDoc("the container exited with a non-zero code", True),
    FailureReason.OOM_KILLED: ReasonDoc(
        "the kernel killed the container for exceeding its memory limit (Docker's OOMKilled)",
        True,
    ),
    FailureReason.TIMED_OUT: ReasonDoc(
        "the job's timeout ran out; the runner stopped the container", True
    ),
    FailureReason.CANCELLED: ReasonDoc(
        "someone cancelled the job (a waiting job never gets an attempt); never retried", True
    ),
    FailureReason.IMAGE_MISSING: ReasonDoc(
        "the engine has no such image and could not pull it; not retried unless a rule says so",
        True,
    ),
    FailureReason.CREATE_FAILED: ReasonDoc(
        "the engine refused to create or start the container (the error holds Docker's "
        "message), or no key of the runner opens the job's secrets; not retried unless a rule "
        "says so",
        True,
    ),
    FailureReason.OUTPUT_INVALID: ReasonDoc(
        "the container exited 0 but what it wrote at $ORCH_OUTPUT is not valid JSON", True
    ),
    FailureReason.INPUT_TOO_LARGE: ReasonDoc(
        'the input made of the outputs of the jobs it depends on (`input: {"from": [...]}`) '
        "is over ORCH_MAX_INPUT_BYTES; the container is not created; not retried unless a "
        "rule says so",
        True,
    ),
    FailureReason.POLICY_REFUSED: ReasonDoc(
        "the runner's container policy refuses the job (stricter than the server's that "
        "accepted it); not retried unless a rule says so",
        True,
    ),
    FailureReason.ENGINE_UNAVAILABLE: ReasonDoc(
        "the Docker engine stopped answering (or restarted) while the container ran", False
    ),
    FailureReason.RUNNER_LOST: ReasonDoc(
        "the runner holding the attempt stopped heartbeating; another runner took it back",
        False,
    ),
    FailureReason.RUNNER_STOPPED: ReasonDoc(
        "the runner stopped or restarted while an HTTP worker served the attempt (a request "
        "in flight cannot be adopted)",
        False,
    ),
    FailureReason.RUNNER_ERROR: ReasonDoc(
        "the runner failed unexpectedly while running the attempt (see its log)", True
    ),
    FailureReason.CONTAINER_VANISHED: ReasonDoc(
        "the container was removed while it ran, not by the runner", False
    ),
    FailureReason.CONTAINER_KILLED: ReasonDoc(
        "the container was killed or stopped through the engine, not by the runner", False
    ),
    FailureReason.WORKER_FAILED: ReasonDoc(
        "an HTTP worker answered the job with a non-2xx status, or the request to it failed",
        True,
    ),
    FailureReason.DEPENDENCY_FAILED: ReasonDoc(
        "a job this one depends on (`on: succeeded`) failed or was cancelled; the job never "
        "got an attempt",
        False,
    ),
}
