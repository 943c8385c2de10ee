"""Retry conditions (``retry.on``) and failure reasons: matching, first match wins, the default
when none matches, validation naming the file, line and field, and what ``decide`` makes of a
result's reason."""

from __future__ import annotations

import pytest

from orchestrator.errors import DefinitionInvalid
from orchestrator.rules.definition_spec import RetryPolicy, load_yaml
from orchestrator.rules.reasons import REASONS, FailureReason
from orchestrator.rules.retry_rules import RetryAction, RetryRule, first_match
from orchestrator.rules.states import JobStatus
from orchestrator.services.attempts import AttemptResult, decide

EXIT = FailureReason.EXIT_CODE
OOM = FailureReason.OOM_KILLED


def rule(**fields: object) -> RetryRule:
    return RetryRule.model_validate(fields)


def test_exit_codes_match_values_and_inclusive_ranges() -> None:
    codes = rule(exit_codes=[1, "3-5", "128-255"], action="retry")
    matched = [code for code in range(256) if codes.matches(code, EXIT, None)]
    assert matched == [1, 3, 4, 5, *range(128, 256)]
    # An attempt with no exit code of its own (timed out, never started) matches no codes.
    assert not codes.matches(None, FailureReason.TIMED_OUT, None)


def test_every_criterion_given_must_match() -> None:
    both = rule(exit_codes=[137], reasons=["oom_killed"], action="retry")
    assert both.matches(137, OOM, None)
    assert not both.matches(137, EXIT, None)
    assert not both.matches(1, OOM, None)
    # A rule with no criterion matches every failure: a catch-all at the end of the list.
    assert rule(action="fail").matches(None, FailureReason.RUNNER_LOST, None)


def test_log_line_is_a_glob_on_the_last_line() -> None:
    reset = rule(log_line="*connection reset*", action="retry")
    assert reset.matches(1, EXIT, "error: connection reset by peer")
    assert not reset.matches(1, EXIT, "error: disk full")
    # No line (nothing written): a log_line rule does not match.
    assert not reset.matches(1, EXIT, None)
    # Case matters, as in a shell's glob.
    assert not reset.matches(1, EXIT, "CONNECTION RESET")


def test_first_match_wins() -> None:
    rules = [
        rule(exit_codes=[2], action="fail"),
        rule(exit_codes=["1-5"], action="retry"),
        rule(reasons=["oom_killed"], action="retry"),
    ]
    assert first_match(rules, 2, EXIT, None) is RetryAction.FAIL
    assert first_match(rules, 3, EXIT, None) is RetryAction.RETRY
    assert first_match(rules, 137, OOM, None) is RetryAction.RETRY
    assert first_match(rules, 9, EXIT, None) is None


def test_rules_decide_then_on_exit_codes_then_the_default() -> None:
    policy = RetryPolicy.model_validate(
        {
            "attempts": 3,
            "on_exit_codes": [3],
            "on": [{"reasons": ["oom_killed"], "action": "retry"}],
        }
    )
    assert policy.retries(1, 137, OOM)
    assert policy.retries(1, 3, EXIT)
    assert not policy.retries(1, 4, EXIT)
    # ``attempts`` caps the total, whatever a rule says.
    assert not policy.retries(3, 137, OOM)
    # With neither rules nor codes: every failure the runner deems retryable.
    plain = RetryPolicy(attempts=2)
    assert plain.retries(1, 9, EXIT)
    assert not plain.retries(1, None, FailureReason.IMAGE_MISSING, retryable=False)
    # A rule may retry what the default would not.
    rescue = RetryPolicy.model_validate(
        {"attempts": 2, "on": [{"reasons": ["create_failed"], "action": "retry"}]}
    )
    assert rescue.retries(1, None, FailureReason.CREATE_FAILED, retryable=False)


def test_decide_gives_each_outcome_its_reason() -> None:
    policy = RetryPolicy(attempts=2)
    assert decide(AttemptResult(exit_code=0), 1, policy).reason is None
    retried = decide(AttemptResult(exit_code=137, reason=OOM), 1, policy)
    assert (retried.status, retried.reason) == (JobStatus.QUEUED, OOM)
    failed = decide(AttemptResult(exit_code=1), 2, policy)
    assert (failed.status, failed.reason) == (JobStatus.FAILED, EXIT)
    timed_out = decide(AttemptResult(exit_code=137, timed_out=True), 2, policy)
    assert timed_out.reason is FailureReason.TIMED_OUT
    cancelled = decide(AttemptResult(exit_code=143, cancelled=True), 1, policy)
    assert (cancelled.status, cancelled.reason) == (JobStatus.CANCELLED, FailureReason.CANCELLED)
    invalid = decide(AttemptResult(exit_code=0, error="not valid JSON"), 2, policy)
    assert invalid.reason is FailureReason.OUTPUT_INVALID
    crashed = decide(AttemptResult(error="the runner failed"), 2, policy)
    assert crashed.reason is FailureReason.RUNNER_ERROR


def test_a_fail_rule_ends_an_interrupted_job_at_once() -> None:
    vanished = AttemptResult(interrupted=FailureReason.CONTAINER_VANISHED)
    keep_going = decide(vanished, 1, RetryPolicy(), interruption_limit=3)
    assert (keep_going.status, keep_going.interrupted) == (JobStatus.QUEUED, True)
    assert keep_going.reason is FailureReason.CONTAINER_VANISHED
    strict = RetryPolicy.model_validate(
        {"on": [{"reasons": ["container_vanished"], "action": "fail"}]}
    )
    failed = decide(vanished, 1, strict, interruption_limit=3)
    assert (failed.status, failed.ruled) == (JobStatus.FAILED, True)
    # The exit code of an interruption is the infrastructure's (an engine restart's 143):
    # rules on exit codes do not match it.
    restarted = AttemptResult(exit_code=143, interrupted=FailureReason.ENGINE_UNAVAILABLE)
    codes = RetryPolicy.model_validate({"on": [{"exit_codes": ["1-255"], "action": "fail"}]})
    assert decide(restarted, 1, codes, interruption_limit=3).status is JobStatus.QUEUED
    # Past the limit, failed by the limit, not by a rule.
    assert decide(vanished, 1, RetryPolicy(), interruption_limit=0).ruled is False


def test_yaml_on_key_and_errors_name_the_file_line_and_field() -> None:
    text = (
        "name: etl\n"
        "image: busybox:1.36\n"
        "retry:\n"
        "  attempts: 3\n"
        "  on:\n"
        "    - exit_codes: [1, '3-5']\n"
        "      action: retry\n"
    )
    (spec,) = load_yaml(text, "defs.yaml")
    assert spec.retry.on == [rule(exit_codes=[1, "3-5"], action="retry")]
    # Shown back as written.
    assert spec.canonical()["retry"]["on"] == [{"exit_codes": [1, "3-5"], "action": "retry"}]

    bad = text.replace("'3-5'", "'9-5'").replace("action: retry", "action: maybe")
    with pytest.raises(DefinitionInvalid) as raised:
        load_yaml(bad, "defs.yaml")
    message = raised.value.message
    assert "defs.yaml:6: retry.on[0].exit_codes[1]: '9-5'" in message
    assert "defs.yaml:7: retry.on[0].action:" in message
    assert raised.value.field == "retry.on[0].exit_codes[1]"

    for wrong, field in (
        ("reasons: [oom]", "retry.on[0].reasons[0]"),
        ("reasons: [cancelled]", "retry.on[0].reasons"),
        ("exit_codes: [256]", "retry.on[0].exit_codes[0]"),
        ("exit_codes: [one]", "retry.on[0].exit_codes[0]"),
        ("log_lines: '*'", "retry.on[0].log_lines"),
    ):
        with pytest.raises(DefinitionInvalid) as raised:
            load_yaml(text.replace("exit_codes: [1, '3-5']", wrong), "defs.yaml")
        assert raised.value.field == field, raised.value.message
        assert raised.value.message.startswith("defs.yaml:6: "), raised.value.message


def test_a_spec_without_rules_keeps_its_hash() -> None:
    # Specs stored before rules existed hash the same: re-registering them is a no-op.
    (spec,) = load_yaml("name: etl\nimage: busybox:1.36\n", "defs.yaml")
    assert "on" not in spec.canonical()["retry"]


def test_every_reason_is_documented() -> None:
    assert set(REASONS) == set(FailureReason)
    assert all(doc.cause for doc in REASONS.values())
