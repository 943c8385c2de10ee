"""Parameter substitution: pure, element-preserving, with clear errors."""

from __future__ import annotations

import pytest

from orchestrator.errors import InvalidRequest
from orchestrator.rules.templating import placeholders, render_value, substitute


def test_whole_element_and_inside_an_element_are_replaced() -> None:
    command = ["echo", "Param::who", "--out=/data/Ref::name.txt"]
    assert substitute(command, {"who": "world", "name": "report"}) == [
        "echo",
        "world",
        "--out=/data/report.txt",
    ]


def test_values_with_spaces_and_shell_characters_stay_one_element() -> None:
    value = "a b; rm -rf / $(x) `y` 'z'"
    assert substitute(["echo", "Param::v"], {"v": value}) == ["echo", value]


def test_value_containing_a_placeholder_is_not_substituted_again() -> None:
    assert substitute(["Param::a"], {"a": "Param::b", "b": "no"}) == ["Param::b"]


def test_backslashes_in_values_are_kept_verbatim() -> None:
    assert substitute(["Param::p"], {"p": r"C:\new\1"}) == [r"C:\new\1"]


def test_several_placeholders_in_one_element_and_both_forms() -> None:
    assert substitute(["Param::a-Ref::b-Param::a"], {"a": "x", "b": "y"}) == ["x-y-x"]


def test_numbers_and_booleans_are_rendered_as_json() -> None:
    params = {"n": 3, "f": 0.5, "t": True, "no": False}
    assert substitute(["Param::n", "Param::f", "Param::t", "Param::no"], params) == [
        "3",
        "0.5",
        "true",
        "false",
    ]
    assert render_value("007") == "007"


def test_empty_string_value_gives_an_empty_element() -> None:
    assert substitute(["echo", "Param::v"], {"v": ""}) == ["echo", ""]


def test_missing_parameter_is_an_error_naming_it() -> None:
    with pytest.raises(InvalidRequest) as info:
        substitute(["echo", "Param::present", "Ref::absent"], {"present": "x"})
    assert "absent" in info.value.message
    assert info.value.field == "parameters.absent"


def test_text_that_only_looks_like_a_placeholder_is_left_alone() -> None:
    command = ["echo", "Param:: x", "param::x", "Params::x", "::x"]
    assert substitute(command, {}) == command


def test_placeholder_name_stops_at_the_first_non_name_character() -> None:
    assert substitute(["Param::who!", "Param::who.txt"], {"who": "w"}) == ["w!", "w.txt"]
    assert placeholders(["Param::a_b-c", "Ref::a_b"]) == ["a_b"]
