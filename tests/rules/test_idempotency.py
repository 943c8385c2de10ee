"""The ``Idempotency-Key`` header's rules: what a key may be (bare or the draft's quoted string),
and which requests are the same one."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidRequest
from orchestrator.rules.idempotency import MAX_KEY_CHARS, parse_key, request_material


def test_no_header_is_no_key() -> None:
    assert parse_key([]) is None


@pytest.mark.parametrize(
    ("value", "key"),
    [
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ('"8e03978e-40d5-43e8-bc93-6894a57f9324"', "8e03978e-40d5-43e8-bc93-6894a57f9324"),
        ("  padded  ", "padded"),
        ('"with \\"quotes\\" and \\\\"', 'with "quotes" and \\'),
        ("a b,c;d", "a b,c;d"),
        ('"', '"'),
        ("k" * MAX_KEY_CHARS, "k" * MAX_KEY_CHARS),
    ],
)
def test_a_key_bare_or_quoted(value: str, key: str) -> None:
    assert parse_key([value]) == key


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ([""], "must not be empty"),
        (["   "], "must not be empty"),
        (['""'], "must not be empty"),
        (['"  "'], "must not be empty"),
        (["k" * (MAX_KEY_CHARS + 1)], f"at most {MAX_KEY_CHARS} characters, got 256"),
        (['"' + "k" * (MAX_KEY_CHARS + 1) + '"'], "at most 255 characters, got 256"),
        (["caf\u00e9"], "only printable ASCII characters"),
        (["tab\there"], "only printable ASCII characters"),
        (['"a"b"'], 'a quoted key holds a " only as \\"'),
        (['"a\\nb"'], 'a quoted key escapes only " and \\ with a backslash'),
        (['"ends\\"'], 'a quoted key escapes only " and \\ with a backslash'),
        (["one", "two"], "sent 2 times; send one key"),
    ],
)
def test_a_bad_key_is_refused_naming_the_header_not_the_value(
    values: list[str], reason: str
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_key(values)
    assert refused.value.message == f"Idempotency-Key: {reason}"
    assert refused.value.field == "Idempotency-Key"


def test_the_same_request_however_it_is_written() -> None:
    body = {"definition": "noop", "input": {"b": 2, "a": [1, {"y": 1, "x": 2}]}}
    reordered = {"input": {"a": [1, {"x": 2, "y": 1}], "b": 2}, "definition": "noop"}
    assert request_material("/p", body) == request_material("/p", reordered)
    # Another path, another value, another list order: another request.
    assert request_material("/q", body) != request_material("/p", body)
    assert request_material("/p", {**body, "definition": "other"}) != request_material("/p", body)
    swapped = {**body, "input": {"b": 2, "a": [{"y": 1, "x": 2}, 1]}}
    assert request_material("/p", swapped) != request_material("/p", body)
