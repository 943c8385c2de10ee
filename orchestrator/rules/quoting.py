"""Quoting a foreign message (an engine's error) into what we store and show: one short line.

An engine's error may carry whatever a remote server answered (a registry's body, say),
many lines long; a job's error keeps its first line only, without control characters.
"""

from __future__ import annotations

import re

QUOTE_CHARS = 200  # at most, of a quoted message
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # a terminal's colour or cursor sequence


def short_quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """The first non-blank line of ``text``, its terminal escapes and control characters
    dropped, cut to ``limit`` characters (ending ``…`` when cut)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    clean = " ".join(_CONTROL.sub(" ", _ESCAPE.sub("", first)).split())
    if len(clean) <= limit:
        return clean
    return clean[: limit - 1].rstrip() + "…"
