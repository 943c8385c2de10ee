"""A small HTTP client of the REST API, for the CLI: requests, streams and error translation.

It owns the transport only: every failure (server refusal, unreachable server, unexpected reply)
becomes a ``ClientError`` with a one-line message. It never prints and never exits.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from orchestrator.errors import OrchestratorError

TIMEOUT_SECONDS = 30.0
# A followed stream may stay quiet for as long as the job runs: no read timeout.
STREAM_TIMEOUT = httpx.Timeout(TIMEOUT_SECONDS, read=None)


class ClientError(OrchestratorError):
    """The server could not be used."""

    code = "client_error"


class ServerUnreachable(ClientError):
    """The server cannot be reached."""

    code = "unreachable"


class ApiError(ClientError):
    """The server refused the request; ``code``, ``message`` and ``field`` are its own."""

    def __init__(self, status: int, code: str, message: str, field: str | None) -> None:
        super().__init__(message, field=field)
        self.status = status
        self.code = code


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
                response.status_code, str(body.get("code")), body["message"], body.get("field")
            )
        raise ClientError(
            f"HTTP {response.status_code} from {self.base_url}{response.request.url.path};"
            " does ORCH_URL point at an orchestrator server?"
        )
