"""Parameter substitution in commands: ``Param::name`` (Daestro) and ``Ref::name`` (AWS Batch).

Pure: a placeholder anywhere inside an element is replaced by the parameter's value; elements
are never split or joined and no shell is involved.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from orchestrator.errors import InvalidRequest

PARAMETER_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
PLACEHOLDER = re.compile(rf"(?:Param|Ref)::({PARAMETER_NAME})")

ParameterValue = str | int | float | bool


def render_value(value: ParameterValue) -> str:
    """A parameter value as text: strings as they are, numbers and booleans as JSON writes them."""
    if isinstance(value, str):
        return value
    return json.dumps(value)


def placeholders(command: Sequence[str]) -> list[str]:
    """The parameter names a command refers to, in order of first use."""
    seen: dict[str, None] = {}
    for element in command:
        for match in PLACEHOLDER.finditer(element):
            seen.setdefault(match.group(1), None)
    return list(seen)


def substitute(
    command: Sequence[str],
    parameters: Mapping[str, ParameterValue],
    *,
    field: str = "command",
) -> list[str]:
    """The command with every placeholder replaced; a placeholder without a value is an error."""
    missing = [name for name in placeholders(command) if name not in parameters]
    if missing:
        names = ", ".join(missing)
        raise InvalidRequest(
            f"{field} uses parameter(s) {names} with no value: "
            "give them in 'parameters' or as defaults in the definition",
            field=f"parameters.{missing[0]}",
        )
    return [
        PLACEHOLDER.sub(lambda m: render_value(parameters[m.group(1)]), element)
        for element in command
    ]
