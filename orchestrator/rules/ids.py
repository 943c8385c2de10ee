"""Job ids: UUIDs of version 7 (RFC 9562), whose first 48 bits are the creation time in
milliseconds, so ids made close in time sort close together.

A job's id keys the jobs' unique index and the indexes of its events, logs and deliveries.
With random ids (version 4) each job landed on a leaf page of its own in every one of them:
retention, which deletes the oldest jobs, dirtied four pages per job, and an insert touched
pages all over each index. Time-ordered ids put old jobs side by side and new ones at the end.
The other 74 bits are random, so an id is no easier to guess than before; what it gives away
is the job's creation time, which the API shows anyway.
"""

from __future__ import annotations

import secrets
import time
import uuid

_VERSION = 7
_VARIANT = 0b10


def time_ordered_id(unix_ms: int | None = None) -> str:
    """A new version 7 UUID, as text: ``unix_ms`` (default: now) in its first 48 bits."""
    millis = time.time_ns() // 1_000_000 if unix_ms is None else unix_ms
    if not 0 <= millis < 1 << 48:
        raise ValueError(f"unix_ms: {millis} does not fit in 48 bits")
    random_a = secrets.randbits(12)
    random_b = secrets.randbits(62)
    value = (millis << 80) | (_VERSION << 76) | (random_a << 64) | (_VARIANT << 62) | random_b
    return str(uuid.UUID(int=value))
