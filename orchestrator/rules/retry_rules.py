"""Retry conditions (a definition's ``retry.on``): an ordered list of rules, the first that
matches a failed attempt deciding whether it is retried, as AWS Batch's ``evaluateOnExit``.

Pure: matching and validation only; ``services.attempts.decide`` applies the action.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from orchestrator.rules.reasons import FailureReason

# Rules per definition, at most (AWS Batch allows 5; a few more cost nothing).
MAX_RETRY_RULES = 16
# Entries of one rule's ``exit_codes``, and characters of a ``log_line`` glob, at most.
MAX_EXIT_CODE_ENTRIES = 64
MAX_LOG_GLOB_CHARS = 512
# A container's exit code as the engine reports it.
MAX_EXIT_CODE = 255
_RANGE = re.compile(r"^\s*(\d+)\s*-\s*(\d+)\s*$")


class SchemaOfFields(BaseModel):
    """A model whose serializer only leaves fields out: its JSON schema is that of its fields
    both ways. A serializer returning a ``dict`` would otherwise make its output schema an
    untyped object, and OpenAPI would show a job's retry policy as one."""

    # One schema for requests and answers, so OpenAPI has one component, not -Input/-Output.
    model_config = ConfigDict(json_schema_mode_override="validation")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        fields_only = {key: value for key, value in core_schema.items() if key != "serialization"}
        return handler(fields_only)


class RetryAction(StrEnum):
    """What a matching rule does with the failed attempt."""

    RETRY = "retry"
    FAIL = "fail"


def _exit_code_range(value: Any) -> tuple[int, int]:
    """``1`` or ``"3-5"`` as an inclusive range; anything else is an error naming the value."""
    if isinstance(value, int) and not isinstance(value, bool):
        low = high = value
    elif isinstance(value, str) and (found := _RANGE.match(value)):
        low, high = int(found[1]), int(found[2])
    elif isinstance(value, str) and value.strip().isdigit():
        low = high = int(value)
    else:
        raise ValueError(f"{value!r} is not an exit code or a range such as '3-5'")
    if not 0 <= low <= high <= MAX_EXIT_CODE:
        raise ValueError(f"{value!r}: exit codes are 0 to {MAX_EXIT_CODE}, low end first")
    return low, high


def _checked_exit_code(value: int | str) -> int | str:
    _exit_code_range(value)
    return value


# Kept as written (the definition shows ``"3-5"`` back), checked when the spec is validated.
ExitCode = Annotated[int | str, AfterValidator(_checked_exit_code)]


class RetryRule(SchemaOfFields):
    """One condition: every criterion given must match (a rule with none matches any failed
    attempt); ``action`` says what then happens."""

    model_config = ConfigDict(extra="forbid")

    exit_codes: list[ExitCode] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_EXIT_CODE_ENTRIES,
        description="Exit codes and inclusive ranges, e.g. [1, '3-5', '128-255'].",
    )
    reasons: list[FailureReason] | None = Field(default=None, min_length=1)
    log_line: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_LOG_GLOB_CHARS,
        description="A glob (fnmatch: *, ?, [...]) the attempt's last log line must match.",
    )
    action: RetryAction

    @model_serializer(mode="wrap")
    def _given_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A rule shows (and is stored with) the criteria it was given.
        data: dict[str, Any] = handler(self)
        return {key: value for key, value in data.items() if value is not None}

    @field_validator("reasons")
    @classmethod
    def _no_cancel(cls, value: list[FailureReason] | None) -> list[FailureReason] | None:
        if value and FailureReason.CANCELLED in value:
            raise ValueError("'cancelled' cannot be matched: a cancelled job is never retried")
        return value

    def matches(self, exit_code: int | None, reason: FailureReason, log_line: str | None) -> bool:
        """Whether a failed attempt with this exit code (None: it has none, e.g. timed out),
        reason and last log line meets every criterion of the rule."""
        if self.exit_codes is not None:
            ranges = (_exit_code_range(entry) for entry in self.exit_codes)
            if exit_code is None or not any(low <= exit_code <= high for low, high in ranges):
                return False
        if self.reasons is not None and reason not in self.reasons:
            return False
        if self.log_line is not None:
            if log_line is None or not fnmatch.fnmatchcase(log_line, self.log_line):
                return False
        return True


def first_match(
    rules: list[RetryRule], exit_code: int | None, reason: FailureReason, log_line: str | None
) -> RetryAction | None:
    """The action of the first rule that matches the failed attempt; None if none does."""
    for rule in rules:
        if rule.matches(exit_code, reason, log_line):
            return rule.action
    return None
