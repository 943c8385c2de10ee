"""The job's output read back from an attempt's container (the container itself is
``services.containers``'s, shared with the dry run)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from orchestrator.rules.containers import OUTPUT_PATH
from orchestrator.rules.masking import Masker


def parse_output(raw: bytes | None, secrets: Iterable[str]) -> tuple[Any, str | None]:
    """(output, error) from the bytes at ``$ORCH_OUTPUT``, secret values masked.

    Invalid JSON is an error of the attempt, not a crash of the runner.
    """
    if raw is None or not raw.strip():
        return None, None
    try:
        text = raw.decode()
        json.loads(text)
    except (ValueError, RecursionError) as exc:
        return None, f"the output at {OUTPUT_PATH} is not valid JSON: {exc}"
    masker = Masker(secrets)
    try:
        # Masking the text catches a value written outside a string (a number); masking the
        # decoded strings catches it however JSON escaped it ("\u0041" for "A").
        return _mask_strings(json.loads(masker(text)), masker), None
    except (ValueError, RecursionError):
        return None, "the output was withheld: masking a secret value in it broke its JSON"


def _mask_strings(value: Any, masker: Masker) -> Any:
    """Decoded JSON with secret values masked in every string, object keys included."""
    if isinstance(value, str):
        return masker(value)
    if isinstance(value, list):
        return [_mask_strings(item, masker) for item in value]
    if isinstance(value, dict):
        return {masker(key): _mask_strings(item, masker) for key, item in value.items()}
    return value
