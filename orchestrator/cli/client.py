"""A small HTTP client of the REST API, for the CLI: requests, streams and error translation.

It owns the transport only: every failure (server refusal, unreachable server, unexpected reply)
becomes a ``ClientError`` with a one-line message. It never prints and never exits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from orchestrator.errors import OrchestratorError

TIMEOUT_SECONDS = 30.0
# A followed stream may stay quiet for as long as the job runs: no read timeout.
STREAM_TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS, read=None)
# A create sent with an Idempotency-Key is sent again when its answer is lost (a connection
# lost or timed out) or the database is briefly unavailable (503), after these pauses; the
# server answers a repeat with the first answer, so nothing is made twice.
KEYED_RETRY_DELAYS = (1.0, 2.0, 4.0)
# The longest Retry-After honoured; a server asking for more is reported, not waited for.
MAX_RETRY_AFTER_SECONDS = 10.0


class ClientError(OrchestratorError):
    """The server could not be used."""

    code = "client_error"


class ServerUnreachable(ClientError):
    """The server cannot be reached."""

    code = "unreachable"


class ApiError(ClientError):
    """The server refused the request; ``code``, ``message`` and ``field`` are its own."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        field: str | None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds, from the answer's Retry-After


class Client:
    """The API of one project (or, with ``project=None``, the server-wide API); a context
    manager."""

    def __init__(self, base_url: str, project: str | None, token: str | None) -> None:
        self.base_url = base_url
        self._prefix = "/v1" if project is None else f"/v1/projects/{quote(project, safe='')}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url, timeout=TIMEOUT_SECONDS, headers=headers)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._http.close()

    def path(self, *parts: str) -> str:
        """The URL path of a project resource; each part is quoted, so ids cannot escape it."""
        return "/".join([self._prefix, *(quote(part, safe="") for part in parts)])

    def request(
        self,
        method: str,
        *parts: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """Send a request to a project resource; the response when it is a success."""
        try:
            response = self._http.request(
                method, self.path(*parts), json=json, params=params, headers=headers
            )
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from exc
        self._check(response)
        return response

    def call(
        self,
        method: str,
        *parts: str,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Send a request to a project resource; its JSON reply."""
        return self.json_body(
            self.request(method, *parts, json=json, params=params, headers=headers)
        )

    def create_once(self, *parts: str, json: Any, key: str) -> Any:
        """POST a create with ``Idempotency-Key: key``; its JSON reply. A lost answer or a 503
        is sent again with the same key, up to ``len(KEYED_RETRY_DELAYS)`` times: the server
        answers a repeat as it answered the first (``Idempotent-Replayed: true``), so the
        thing is made once however many tries it took."""
        headers = {"Idempotency-Key": key}
        for pause in KEYED_RETRY_DELAYS:
            try:
                return self.call("POST", *parts, json=json, headers=headers)
            except ServerUnreachable:
                wait = pause
            except ApiError as exc:
                wait = max(pause, exc.retry_after or 0.0)
                if exc.status != 503 or wait > MAX_RETRY_AFTER_SECONDS:
                    raise
            time.sleep(wait)
        # The last try: its failure is the command's.
        return self.call("POST", *parts, json=json, headers=headers)

    def stream_text(self, *parts: str, params: dict[str, Any] | None = None) -> Iterator[str]:
        """GET a streamed text resource, yielding the text as it arrives."""
        try:
            with self._http.stream(
                "GET", self.path(*parts), params=params, timeout=STREAM_TIMEOUT
            ) as response:
                if response.is_error:
                    response.read()
                    self._check(response)
                yield from response.iter_text()
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            raise self._transport_error(exc) from exc

    def _transport_error(self, exc: Exception) -> ClientError:
        hint = "is the server running? ORCH_URL sets its address"
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return ServerUnreachable(f"cannot reach the server at {self.base_url} ({hint})")
        if isinstance(exc, httpx.TimeoutException):
            return ServerUnreachable(f"the server at {self.base_url} did not answer in time")
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
            return ClientError(f"invalid server URL {self.base_url!r} (from ORCH_URL)")
        reason = str(exc) or type(exc).__name__
        return ServerUnreachable(f"lost the connection to the server at {self.base_url}: {reason}")

    def json_body(self, response: httpx.Response) -> Any:
        """The JSON of a successful response; a ``ClientError`` when it is not JSON."""
        try:
            return response.json()
        except ValueError:
            raise ClientError(
                f"unexpected reply from {self.base_url} (HTTP {response.status_code}, not JSON);"
                " does ORCH_URL point at an orchestrator server?"
            ) from None

    def _check(self, response: httpx.Response) -> None:
        if not response.is_error:
            return
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            raise ApiError(
                response.status_code,
                str(body.get("code")),
                body["message"],
                body.get("field"),
                _seconds(response.headers.get("Retry-After")),
            )
        raise ClientError(
            f"HTTP {response.status_code} from {self.base_url}{response.request.url.path};"
            " does ORCH_URL point at an orchestrator server?"
        )


def _seconds(retry_after: str | None) -> float | None:
    """A ``Retry-After`` in seconds (the server sends seconds, never a date); None otherwise."""
    try:
        return float(retry_after) if retry_after is not None else None
    except ValueError:
        return None
