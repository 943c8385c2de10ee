"""One request of a schedule's HTTP target: built from its stored target (secret headers
decrypted), sent, and what came back kept without a secret in it (masked values, no URL
userinfo, a body cut at ``BODY_LIMIT`` bytes).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from orchestrator.background.outbound import OutboundRefused
from orchestrator.rules.masking import mask
from orchestrator.storage.models import utcnow
from orchestrator.storage.secret_box import SecretBox

BODY_LIMIT = 1024  # bytes of a response body kept
_USERINFO = re.compile(r"(?<=://)[^/\s@]*@")


@dataclass(frozen=True)
class HttpRequest:
    """One request to send, secret headers included, and the values to mask in what comes
    back."""

    method: str
    url: str
    headers: dict[str, str]
    body: str | None
    timeout: float
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class Outcome:
    """What one attempt got: a status code (and body), or an error; both secret-free."""

    started: datetime
    status_code: int | None = None
    duration_ms: float | None = None
    body: str | None = None
    error: str | None = None
    refused: bool = False  # the outbound rule refused the address: nothing was sent

    @property
    def ok(self) -> bool:
        """A 2xx response."""
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def summary(self) -> str:
        """``HTTP 503`` or the error."""
        return f"HTTP {self.status_code}" if self.status_code is not None else str(self.error)


def describe(outcome: Outcome, attempt: int, total: int, will_retry: bool) -> str:
    """The schedule's ``last_outcome`` after an attempt."""
    if outcome.ok:
        took = f"{outcome.duration_ms:.0f} ms"
        return f"succeeded: HTTP {outcome.status_code} in {took} (attempt {attempt})"
    if will_retry:
        return f"retrying: {outcome.summary} (attempt {attempt} of {total})"
    plural = "attempt" if attempt == 1 else "attempts"
    return f"failed after {attempt} {plural}: {outcome.summary}"


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` without secret values and without the userinfo of any URL in it."""
    return _USERINFO.sub("", mask(text, secrets))


def build_request(
    target: dict[str, Any], ciphertext: str | None, box: SecretBox, default_timeout: float
) -> HttpRequest:
    """The request of a stored target, its secret headers decrypted."""
    secret_headers = box.decrypt(ciphertext) if ciphertext else {}
    url = str(target["url"])
    parts = urlsplit(url)
    secrets = [*secret_headers.values(), *(v for v in (parts.password,) if v)]
    timeout = target.get("timeout")
    return HttpRequest(
        method=str(target.get("method") or "POST"),
        url=url,
        headers={**target.get("headers", {}), **secret_headers},
        body=target.get("body"),
        timeout=float(timeout) if timeout else default_timeout,
        secrets=tuple(secrets),
    )


def _error_text(exc: Exception, request: HttpRequest) -> str:
    """What went wrong, in words that carry no header value or URL userinfo."""
    if isinstance(exc, httpx.TimeoutException):
        return f"timed out after {request.timeout} s"
    if isinstance(exc, httpx.ConnectError):
        message = str(exc)
        if "refused" in message.lower():
            return "connection refused"
        return scrub(f"connection failed: {message or type(exc).__name__}", request.secrets)
    if isinstance(exc, httpx.LocalProtocolError):
        # Its message may quote a header as bytes, beyond the reach of masking.
        return "request could not be sent: a header or the body is not valid HTTP"
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return scrub(f"invalid URL: {exc}", request.secrets)
    if isinstance(exc, httpx.TransportError):
        return scrub(f"network error: {str(exc) or type(exc).__name__}", request.secrets)
    return f"request failed: {type(exc).__name__}"


def send(client: httpx.Client, request: HttpRequest) -> Outcome:
    """Send ``request`` once (no redirects followed); its outcome, masked."""
    started_at = utcnow()
    started = time.monotonic()
    # A little more than the limit, so a secret cut by the limit is still masked whole.
    keep = BODY_LIMIT + max((len(s.encode()) for s in request.secrets), default=0)
    try:
        with client.stream(
            request.method,
            request.url,
            headers=request.headers,
            content=None if request.body is None else request.body.encode(),
            timeout=request.timeout,
            follow_redirects=False,
        ) as response:
            kept = bytearray()
            for chunk in response.iter_bytes():
                kept += chunk
                if len(kept) >= keep or time.monotonic() - started > request.timeout:
                    break
            status_code = response.status_code
    except OutboundRefused as exc:
        return Outcome(started=started_at, error=f"not sent: {exc}", refused=True)
    except Exception as exc:
        return Outcome(
            started=started_at,
            duration_ms=round((time.monotonic() - started) * 1000, 1),
            error=_error_text(exc, request),
        )
    duration_ms = round((time.monotonic() - started) * 1000, 1)
    body = keep_body(bytes(kept[:keep]), cut=len(kept) >= keep, secrets=request.secrets)
    return Outcome(started=started_at, status_code=status_code, duration_ms=duration_ms, body=body)


def keep_body(head: bytes, *, cut: bool, secrets: Sequence[str]) -> str:
    """The first ``BODY_LIMIT`` bytes of a body, as text, secret values masked.

    ``head`` (the first bytes read) runs past the limit by the longest secret, so a secret the
    limit cuts is masked whole. When ``head`` itself was cut short of the body, a tail that
    begins a secret value is dropped first: masking shortens the text, and could draw that
    fragment inside the limit.
    """
    text = head.decode("utf-8", errors="replace")
    if cut:
        text = _without_secret_start(text, secrets)
    return mask(text, secrets).encode()[:BODY_LIMIT].decode("utf-8", errors="ignore")


def _without_secret_start(text: str, secrets: Sequence[str]) -> str:
    """``text`` less any tail that is the start of a secret value."""
    for value in secrets:
        for length in range(min(len(value) - 1, len(text)), 0, -1):
            if text.endswith(value[:length]):
                text = text[:-length]
                break
    return text
