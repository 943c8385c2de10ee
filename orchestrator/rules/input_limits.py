"""Bounds on what one submission or definition may carry, from settings.

The request body as a whole is bounded by the HTTP layer (``api/limits.py``); these bound its
parts: the size of ``input``, ``metadata`` and each secret value (413), the number of parameters
and env vars (422), and the shortest secret value masking can hide (400). Each refusal names the
field, the limit and the setting that raises it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.errors import InvalidRequest, LimitExceeded, PayloadTooLarge
from orchestrator.rules.masking import MIN_SECRET_CHARS


@dataclass(frozen=True)
class InputLimits:
    """The limits in force (``Settings.input_limits`` reads them from ``ORCH_MAX_*``)."""

    max_input_bytes: int = 262_144
    max_metadata_bytes: int = 16_384
    max_parameters: int = 100
    max_env: int = 100
    max_secret_bytes: int = 65_536
    # The most children one array job may have (``rules.arrays``).
    max_array_size: int = 10_000

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

    def check_secrets(self, field: str, values: Mapping[str, str]) -> None:
        """Refuse a secret value masking cannot handle: one shorter than ``MIN_SECRET_CHARS``
        (400) or over ``max_secret_bytes`` of UTF-8 (413). The one rule for every secret a
        request carries (``field``: ``secret_env``, ``target.http.secret_headers``...); the
        errors name the entry, never its value."""
        for name in sorted(values):
            value = values[name]
            if len(value) < MIN_SECRET_CHARS:
                raise InvalidRequest(
                    f"{field}.{name}: a secret value must be at least {MIN_SECRET_CHARS} "
                    "characters long (masking a shorter one in logs and errors would garble "
                    "them and reveal it)",
                    field=f"{field}.{name}",
                )
            if len(value.encode()) > self.max_secret_bytes:
                raise PayloadTooLarge(
                    f"{field}.{name}: a secret value is over the limit of "
                    f"{self.max_secret_bytes} bytes (ORCH_MAX_SECRET_BYTES)",
                    field=f"{field}.{name}",
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
