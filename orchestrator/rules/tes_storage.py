"""Which URLs a GA4GH TES task's inputs and outputs may name on this server.

``file://`` inputs (under the runners' input roots) and outputs (under the project's output
folder) and ``http(s)://`` inputs are always understood; ``s3://bucket/key`` inputs and outputs
only for the buckets the operator lists (``ORCH_TES_S3_BUCKETS``; ``*``: any bucket the
runners' S3 credentials reach). Checked when a task is posted (a 400 naming the field) and again
by the runner before it touches a store (the settings may have changed since).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

ANY_BUCKET = "*"
# S3's bucket naming rules (3 to 63 lowercase letters, digits, dots and hyphens, starting and
# ending with a letter or digit); older buckets may hold capitals or underscores, which the
# path-style addressing used here still reaches.
_BUCKET = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,61}[A-Za-z0-9]$")


@dataclass(frozen=True)
class S3Location:
    """An ``s3://bucket/key`` URL taken apart."""

    bucket: str
    key: str


def s3_location(url: str) -> S3Location:
    """The bucket and key of an ``s3://`` URL (``ValueError`` saying what is wrong)."""
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None or parts.port is not None:
        raise ValueError("an s3:// URL names a bucket, not credentials or a port")
    if parts.query or parts.fragment:
        raise ValueError("an s3:// URL has no query or fragment")
    bucket = parts.netloc
    if not _BUCKET.match(bucket):
        raise ValueError(f"'{bucket}' is not an S3 bucket name")
    return S3Location(bucket=bucket, key=parts.path.removeprefix("/"))


@dataclass(frozen=True)
class TesStorage:
    """The URL schemes tasks may use, and the S3 buckets."""

    s3_buckets: tuple[str, ...] = ()

    @property
    def input_schemes(self) -> tuple[str, ...]:
        """Schemes an input's URL may have."""
        return ("file", "http", "https", "s3") if self.s3_buckets else ("file", "http", "https")

    @property
    def output_schemes(self) -> tuple[str, ...]:
        """Schemes an output's URL may have."""
        return ("file", "s3") if self.s3_buckets else ("file",)

    def refusal(self, url: str, *, output: bool) -> str | None:
        """Why ``url`` may not be an input's (or an output's) URL here; None when it may."""
        scheme = urlsplit(url).scheme.lower()
        schemes = self.output_schemes if output else self.input_schemes
        if scheme not in schemes:
            what = "outputs" if output else "inputs"
            return (
                f"scheme '{scheme}' is not supported for {what} on this server"
                f" (supported: {', '.join(schemes)})"
            )
        if scheme != "s3":
            return None
        try:
            location = s3_location(url)
        except ValueError as exc:
            return str(exc)
        if not location.key.strip("/"):
            return "an s3:// URL names an object or a prefix in its bucket: s3://bucket/key"
        if ANY_BUCKET not in self.s3_buckets and location.bucket not in self.s3_buckets:
            bucket = location.bucket
            return f"bucket '{bucket}' is not one this server may use (ORCH_TES_S3_BUCKETS)"
        return None
