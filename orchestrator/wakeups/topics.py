"""Every hub topic, named in one place: what a publish on it means and who waits for it."""

from __future__ import annotations

WORK = "work"  # a job became runnable: runners claim
CANCEL = "cancel"  # a cancel was requested: runners pass it on
WEBHOOKS = "webhooks"  # a delivery became due, or a send slot came free: the webhook sender
SCHEDULES = "schedules"  # a schedule was created or changed: the scheduler looks again
HTTP_RUNS = "http-runs"  # an HTTP run became due (the scheduler publishes it): the sender
TOKENS = "tokens"  # a token was revoked: live streams re-check their tokens now


def job_topic(job_id: str) -> str:
    """The topic of one job's events, status and logs: its followers."""
    return f"job:{job_id}"


def schedule_topic(schedule_id: str) -> str:
    """The topic of one schedule's runs: published after each recorded attempt."""
    return f"schedule:{schedule_id}"


def control_topic(runner: str) -> str:
    """The topic that tells the runner ``runner`` to look at its row now (a drain request)."""
    return f"runner-control:{runner}"


def runner_topic(runner: str) -> str:
    """The topic that wakes the claim loop of the runner ``runner`` (a freed slot, a stop)."""
    return f"runner:{runner}"
