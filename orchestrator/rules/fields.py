"""Field types shared by definition specs and API requests, with the checks that keep every
accepted value storable (SQLite and PostgreSQL) and usable in a container.

A value that passes these types never causes a 500 later: no NUL characters in text, no NaN or
infinity, no lone surrogates, no JSON nested deeper than ``MAX_JSON_DEPTH``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, StringConstraints, WithJsonSchema

from orchestrator.rules.units import MAX_DURATION_SECONDS, parse_duration

NAME_PATTERN = r"^[a-z][a-z0-9-]{0,61}[a-z0-9]$"
ENV_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PARAMETER_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_JSON_DEPTH = 64
MAX_INT = 2**31 - 1


def storable(text: str) -> bool:
    """Whether ``text`` can be stored in a text column and passed to a container."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    if not storable(value):
        raise ValueError("must be valid Unicode text (no lone surrogates)")
    return value


def _scalar_to_text(value: Any) -> Any:
    # YAML turns `PORT: 8080` into an int; env values are text, so render scalars as text.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError("must be a finite number or text")
        return str(value)
    return value


def _parameter_value(value: Any) -> Any:
    if isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value
    if isinstance(value, str):
        return _text(value)
    raise ValueError("must be a string, number or boolean")


def _json_document(value: Any, depth: int = 0) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must not contain NaN or infinite numbers")
    if isinstance(value, str) and not storable(value.replace("\x00", "")):
        raise ValueError("must be valid Unicode text (no lone surrogates)")
    if isinstance(value, dict):
        for key, item in value.items():
            _json_document(key, depth + 1)
            _json_document(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _json_document(item, depth + 1)
    return value


Text = Annotated[str, AfterValidator(_text)]
Name = Annotated[str, StringConstraints(pattern=NAME_PATTERN)]
EnvName = Annotated[str, StringConstraints(pattern=ENV_NAME_PATTERN)]
EnvValue = Annotated[str, BeforeValidator(_scalar_to_text), AfterValidator(_text)]
ParameterName = Annotated[str, StringConstraints(pattern=PARAMETER_NAME_PATTERN)]
ParameterValue = Annotated[str | int | float | bool, BeforeValidator(_parameter_value)]
JsonDocument = Annotated[Any, AfterValidator(_json_document)]


# The schema says what a client may send, exactly what ``parse_duration`` reads (a generated
# client that checks the pattern must not refuse a value the server takes), not the seconds
# the validator makes of it.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION_SECONDS},
                {
                    "type": "string",
                    "pattern": r"^\s*(\d+(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)\s*$",
                },
            ],
            "description": "Seconds, or a duration such as 30s, 10m or 1h30m.",
        },
        mode="validation",
    ),
]
