"""Token roles: what a token may do."""

from __future__ import annotations

from enum import StrEnum


class Role(StrEnum):
    """What a token may do."""

    ADMIN = "admin"
    WRITE = "write"
    READ = "read"
