"""Bounds on what one submission or definition may carry, from settings.

The request body as a whole is bounded by the HTTP layer (``api/limits.py``); these bound its
parts: the size of ``input`` and ``metadata`` (413) and the number of parameters and env vars
(422). Each refusal names the field, the limit and the setting that raises it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from orchestrator.config import Settings
from orchestrator.errors import LimitExceeded, PayloadTooLarge


@dataclass(frozen=True)
class InputLimits:
    """The limits in force; ``from_settings`` reads them from ``ORCH_MAX_*``."""

    max_input_bytes: int = 262_144
    max_metadata_bytes: int = 16_384
    max_parameters: int = 100
    max_env: int = 100

    @classmethod
    def from_settings(cls, settings: Settings) -> InputLimits:
        """The limits the settings give."""
        return cls(
            max_input_bytes=settings.max_input_bytes,
            max_metadata_bytes=settings.max_metadata_bytes,
            max_parameters=settings.max_parameters,
            max_env=settings.max_env,
        )

    def check_document(self, field: str, value: Any) -> None:
        """Refuse ``input`` or ``metadata`` whose JSON encoding is over its byte limit (413)."""
        limit, setting = {
            "input": (self.max_input_bytes, "ORCH_MAX_INPUT_BYTES"),
            "metadata": (self.max_metadata_bytes, "ORCH_MAX_METADATA_BYTES"),
        }[field]
        size = json_size(value)
        if size > limit:
            raise PayloadTooLarge(
                f"{field}: {size} bytes of JSON is over the limit of {limit} bytes ({setting})",
                field=field,
            )

    def check_counts(self, parameters: int, env: int, where: str = "") -> None:
        """Refuse more parameters, or env vars (plain and secret together), than allowed (422).

        ``where`` says whose they are, e.g. "with the definition's defaults".
        """
        for field, count, limit, setting in (
            ("parameters", parameters, self.max_parameters, "ORCH_MAX_PARAMETERS"),
            ("env", env, self.max_env, "ORCH_MAX_ENV"),
        ):
            if count > limit:
                raise LimitExceeded(
                    f"{field}: {count} entries{where} is over the limit of {limit} ({setting})",
                    field=field,
                )


def json_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what is stored)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
