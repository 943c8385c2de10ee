"""GA4GH TES tasks' ``s3://`` inputs and outputs, through boto3 (the AWS SDK), against AWS or any
S3-compatible store (MinIO, Ceph, a moto server) at a configured endpoint.

Credentials are boto3's own chain on the runner's host (``AWS_ACCESS_KEY_ID`` and
``AWS_SECRET_ACCESS_KEY``, ``~/.aws``, an instance role): they never pass through a task, and an
error names the store's error code, never a credential or a signed URL.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from orchestrator.rules.tes_storage import S3Location

_BLOCK = 1024 * 1024


class S3Error(Exception):
    """An S3 request failed; the text says why (the store's error code, or the connection)."""


class S3TooLarge(S3Error):
    """An object is larger than the download may be."""


@dataclass
class S3Store:
    """One S3 endpoint (None: AWS's, by region), with a client made on first use and shared
    by the runner's attempts (boto3 clients are thread-safe)."""

    endpoint_url: str | None = None
    region: str | None = None
    timeout: float = 30.0
    _client: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def client(self) -> Any:
        """The boto3 S3 client."""
        with self._lock:
            if self._client is None:
                config = Config(
                    connect_timeout=self.timeout,
                    read_timeout=self.timeout,
                    retries={"max_attempts": 3, "mode": "standard"},
                    # A store at its own endpoint (MinIO, Ceph) seldom has per-bucket DNS names.
                    s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                )
                self._client = boto3.session.Session().client(
                    "s3", endpoint_url=self.endpoint_url, region_name=self.region, config=config
                )
            return self._client

    def download(self, location: S3Location, target: BinaryIO, limit: int) -> int:
        """Write the object at ``location`` to ``target``; its size. Larger than ``limit``
        bytes: refused (before reading, when the store says its size)."""
        with _failures():
            found = self.client().get_object(Bucket=location.bucket, Key=location.key)
            body = found["Body"]
            try:
                if int(found.get("ContentLength") or 0) > limit:
                    raise S3TooLarge(f"larger than {limit} bytes")
                size = 0
                while block := body.read(_BLOCK):
                    size += len(block)
                    if size > limit:
                        raise S3TooLarge(f"larger than {limit} bytes")
                    target.write(block)
                return size
            finally:
                body.close()

    def objects_under(self, location: S3Location) -> Iterator[tuple[tuple[str, ...], str]]:
        """Every object under the prefix ``location`` names (as a directory): its path below
        the prefix, in parts, and its key. A key that would leave the directory (an empty,
        ``.`` or ``..`` part) is refused; folder markers (keys ending in ``/``) are skipped."""
        prefix = location.key.rstrip("/") + "/"
        with _failures():
            pages = self.client().get_paginator("list_objects_v2")
            for page in pages.paginate(Bucket=location.bucket, Prefix=prefix):
                for item in page.get("Contents") or []:
                    key = str(item["Key"])
                    if key.endswith("/"):
                        continue
                    parts = tuple(key[len(prefix) :].split("/"))
                    if any(part in ("", ".", "..") for part in parts):
                        raise S3Error(f"the key {key!r} has an empty, '.' or '..' part")
                    yield parts, key

    def upload(self, source: BinaryIO, location: S3Location) -> None:
        """Write ``source`` to the object at ``location`` (in parts when it is large)."""
        with _failures():
            self.client().upload_fileobj(source, location.bucket, location.key)


@contextmanager
def _failures() -> Iterator[None]:
    """boto3's errors as ``S3Error``s saying why, in words a system log may show."""
    try:
        yield
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code", "an error")
        raise S3Error(f"S3 answered {code}") from None
    except NoCredentialsError:
        raise S3Error("no S3 credentials on this runner's host") from None
    except EndpointConnectionError:
        raise S3Error("the S3 endpoint could not be reached") from None
    except BotoCoreError as error:
        raise S3Error(f"the S3 request failed ({type(error).__name__})") from None
