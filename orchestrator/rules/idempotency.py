"""The ``Idempotency-Key`` request header (IETF draft-ietf-httpapi-idempotency-key-header, and
Stripe's practice): what a key may be, and what makes two requests with one key the same
request. Pure; storing keys and their answers is ``services.idempotency``'s.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from orchestrator.errors import InvalidRequest

HEADER = "Idempotency-Key"
# How long a key's answer is kept by default (seconds): Stripe's 24 hours.
DEFAULT_TTL_SECONDS = 86400.0
# Stripe's limit; a UUID (the draft's example) is 36.
MAX_KEY_CHARS = 255


def _refused(reason: str) -> InvalidRequest:
    # The value itself is never quoted: a client may have pasted a secret in the wrong header.
    return InvalidRequest(f"{HEADER}: {reason}", field=HEADER)


def _unquoted(value: str) -> str:
    """The content of a structured-field string (``"..."``, RFC 8941 §3.3.3): ``\\"`` and
    ``\\\\`` are its only escapes, and a bare quote cannot be in it."""
    inner, chars, index = value[1:-1], [], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            if index + 1 == len(inner) or inner[index + 1] not in '"\\':
                raise _refused('a quoted key escapes only " and \\ with a backslash')
            char = inner[index + 1]
            index += 1
        elif char == '"':
            raise _refused('a quoted key holds a " only as \\"')
        chars.append(char)
        index += 1
    return "".join(chars)


def parse_key(values: Sequence[str]) -> str | None:
    """The key a request's ``Idempotency-Key`` header values give, or None without the header.

    The draft's form, a quoted string (``"8e03978e-40d5-43e8-bc93-6894a57f9324"``), and
    Stripe's bare token are the same key. Refused (400 naming the header): an empty key, one
    longer than ``MAX_KEY_CHARS``, one that is not printable ASCII, and the header sent twice.
    """
    if not values:
        return None
    if len(values) > 1:
        raise _refused(f"sent {len(values)} times; send one key")
    key = values[0].strip()
    if len(key) >= 2 and key[0] == key[-1] == '"':
        key = _unquoted(key)
    if not key.strip():
        raise _refused("must not be empty")
    if len(key) > MAX_KEY_CHARS:
        raise _refused(f"at most {MAX_KEY_CHARS} characters, got {len(key)}")
    # Of ASCII, exactly 0x20-0x7E are printable.
    if not (key.isascii() and key.isprintable()):
        raise _refused("only printable ASCII characters")
    return key


def request_material(path: str, body: Any) -> bytes:
    """What makes two requests with one key the same request: the path they were sent to and
    their body (its fields with their defaults, as JSON), in canonical form (keys sorted, no
    spaces), so neither a client's formatting nor its key order tells them apart."""
    canonical = {"path": path, "body": body}
    return json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
