"""Parsing of human units: durations (``30s``, ``10m``, ``1h30m``) and sizes (``256Mi``, ``1G``).

Pure functions; they raise ``ValueError`` with a message fit to show a user.
"""

from __future__ import annotations

import math
import re

MAX_DURATION_SECONDS = 365 * 86400
# Retention is counted in years for audit trails; ten at most.
MAX_RETENTION_SECONDS = 3650 * 86400
MAX_SIZE_BYTES = 1024**5

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}

_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGTP]i?|[kmgtp]|[KMGTP]?B)?$")
_SIZE_FACTOR = {
    None: 1,
    "B": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "P": 1000**5,
    "KB": 1000,
    "MB": 1000**2,
    "GB": 1000**3,
    "TB": 1000**4,
    "PB": 1000**5,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
    "Pi": 1024**5,
}


def parse_duration(value: str | int | float) -> float:
    """Seconds from ``90``, ``"90"``, ``"30s"``, ``"10m"``, ``"2h"`` or ``"1h30m"``; must be > 0."""
    seconds = _seconds(value)
    if seconds > MAX_DURATION_SECONDS:
        raise ValueError("must be at most 365 days")
    if seconds <= 0:
        raise ValueError("must be greater than zero")
    return seconds


def parse_retention(value: str | int | float) -> float:
    """Seconds to keep finished work, as a duration (``30d``, ``12h``, ``90s``); ``0`` keeps it
    for good (returned as 0)."""
    seconds = _seconds(value)
    if seconds > MAX_RETENTION_SECONDS:
        raise ValueError("must be at most 3650 days (0 keeps everything)")
    if seconds < 0:
        raise ValueError("must be a duration such as 30d or 12h, or 0 to keep everything")
    return seconds


def _seconds(value: str | int | float) -> float:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a duration such as 30s, 10m or 2h")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        else:
            parts = _DURATION_PART.findall(text)
            if not parts or "".join(n + u for n, u in parts) != text:
                raise ValueError(f"{value!r} is not a duration such as 30s, 10m or 2h")
            seconds = sum(float(n) * _DURATION_SECONDS[u] for n, u in parts)
    if not math.isfinite(seconds):
        raise ValueError("must be a finite duration")
    return seconds


def format_duration(seconds: float) -> str:
    """The shortest exact form of a duration: 90 -> ``1m30s``, 0.5 -> ``500ms``."""
    if seconds < 1 or seconds != int(seconds):
        if seconds * 1000 == int(seconds * 1000):
            return f"{int(seconds * 1000)}ms"
        return f"{seconds}s"
    remaining = int(seconds)
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, remaining = divmod(remaining, size)
        if count:
            out += f"{count}{unit}"
    return out


def parse_size(value: str | int) -> int:
    """Bytes from ``1048576``, ``"256Mi"``, ``"1G"``, ``"512MB"``; must be > 0."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError("must be a size such as 256Mi or 1G")
    if isinstance(value, int):
        size = value
    else:
        match = _SIZE.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a size such as 256Mi or 1G")
        size = int(float(match.group(1)) * _SIZE_FACTOR[match.group(2)])
    if size <= 0:
        raise ValueError("must be greater than zero")
    if size > MAX_SIZE_BYTES:
        raise ValueError("must be at most 1Pi")
    return size
