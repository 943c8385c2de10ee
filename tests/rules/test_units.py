"""Durations, sizes and retry decisions: pure functions."""

from __future__ import annotations

import re

import pytest
from pydantic import TypeAdapter

from orchestrator.rules.definition_spec import RetryPolicy
from orchestrator.rules.fields import Duration
from orchestrator.rules.states import JobStatus
from orchestrator.rules.units import format_duration, parse_duration, parse_size
from orchestrator.services.attempts import AttemptResult, decide


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("90", 90),
        (45, 45),
    ],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "10x", "-5s", "0", "1h 30m", "s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    for seconds in (0.25, 1, 59, 90, 3600, 5400, 86461):
        assert parse_duration(format_duration(seconds)) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("256Mi", 256 * 2**20), ("1G", 10**9), ("1Gi", 2**30), ("512MB", 512 * 10**6), (4096, 4096)],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "12Zi", "-1Mi", "Mi", "0"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


def test_attempts_count_the_first_run_as_aws_batch_does() -> None:
    policy = RetryPolicy(attempts=3)
    failure = AttemptResult(exit_code=1)
    assert decide(failure, 1, policy).status is JobStatus.QUEUED
    assert decide(failure, 2, policy).status is JobStatus.QUEUED
    assert decide(failure, 3, policy).status is JobStatus.FAILED
    assert decide(failure, 1, RetryPolicy()).status is JobStatus.FAILED


def test_retry_only_on_listed_exit_codes() -> None:
    policy = RetryPolicy(attempts=5, on_exit_codes=[3])
    assert decide(AttemptResult(exit_code=3), 1, policy).status is JobStatus.QUEUED
    assert decide(AttemptResult(exit_code=4), 1, policy).status is JobStatus.FAILED
    # A timeout has no exit code of the job's own: not retried when codes are listed.
    assert (
        decide(AttemptResult(exit_code=137, timed_out=True), 1, policy).status is JobStatus.FAILED
    )


def test_exponential_backoff_is_capped() -> None:
    policy = RetryPolicy.model_validate(
        {"attempts": 10, "backoff": {"delay": "2s", "factor": 3, "max": "20s"}}
    )
    delays = [decide(AttemptResult(exit_code=1), n, policy).retry_delay for n in range(1, 5)]
    assert delays == [2, 6, 18, 20]


def test_constant_backoff_shorthand() -> None:
    policy = RetryPolicy.model_validate({"attempts": 4, "backoff": "5s"})
    delays = [decide(AttemptResult(exit_code=1), n, policy).retry_delay for n in range(1, 4)]
    assert delays == [5, 5, 5]


def test_success_cancel_and_non_retryable_failures() -> None:
    policy = RetryPolicy(attempts=3)
    assert decide(AttemptResult(exit_code=0), 1, policy).status is JobStatus.SUCCEEDED
    assert decide(AttemptResult(exit_code=1, cancelled=True), 1, policy).status is (
        JobStatus.CANCELLED
    )
    image_missing = AttemptResult(error="image 'x' is not on the Docker engine", retryable=False)
    assert decide(image_missing, 1, policy).status is JobStatus.FAILED
    bad_output = AttemptResult(exit_code=0, error="not valid JSON")
    assert decide(bad_output, 3, policy).status is JobStatus.FAILED


@pytest.mark.parametrize(
    "text",
    [
        "90",
        "0.5",
        "1.5s",
        "1h30m",
        " 30s ",
        "500ms",
        "2d",
        "1d2h3m4s5ms",
        "x",
        "1h 30m",
        "-1",
        "s",
        "1.s",
        "30S",
        "",
        "1e3",
    ],
)
def test_the_documented_duration_pattern_takes_exactly_what_the_server_reads(text: str) -> None:
    # A generated client checks the pattern before it sends: it must not refuse what the server
    # takes, nor let through a value the server refuses for its form (zero and the range are the
    # numbers' business, not the pattern's).
    schema = TypeAdapter(Duration).json_schema()
    pattern = next(branch["pattern"] for branch in schema["anyOf"] if branch["type"] == "string")
    try:
        parse_duration(text)
        read = True
    except ValueError:
        read = False
    assert (re.fullmatch(pattern, text) is not None) == read
