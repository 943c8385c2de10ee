"""How an error response is written, chosen by the path it answers: the native
``{code, message, field}``, or a drop-in API's own shape under that API's prefix (SaladCloud's
RFC 7807 problem, Daestro's ``{"ok": false, "message"}``, Quedup's ``{"error"}``; GA4GH TES
answers with the native body).

``shape_for(path)`` is the one place that chooses. The drop-in routes render their refusals
through it, and so do the app's handlers (unknown route, wrong method, a crash) and the
body-size middleware, which answer before or outside any route. Each drop-in router takes its
prefix from here, so the routes and the choice cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse

PROBLEM = "application/problem+json"
# The reason phrases of the statuses a problem's ``title`` names (RFC 9110).
TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every native error response."""
    return {"code": code, "message": message, "field": field}


@dataclass(frozen=True)
class ErrorShape:
    """One API's way of writing an error: its body, media type and 401 challenge."""

    # The paths it answers: this prefix and everything below it ('' for the native API).
    prefix: str
    media_type: str = "application/json"
    challenge: str = "Bearer"  # the WWW-Authenticate of a 401

    def body(self, status: int, message: str, code: str, field: str | None) -> dict[str, Any]:
        """The error's JSON body (the native one here; each drop-in shape has its own)."""
        return error_body(code, message, field)

    def response(
        self,
        status: int,
        message: str,
        *,
        code: str = "http_error",
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> JSONResponse:
        """The error response; ``code`` and ``field`` are the native shape's (the drop-in
        shapes have no place for them)."""
        sent = dict(headers or {})
        if status == 401:
            sent["WWW-Authenticate"] = self.challenge
        return JSONResponse(
            self.body(status, message, code, field),
            status_code=status,
            media_type=self.media_type,
            headers=sent or None,
        )

    def owns(self, path: str) -> bool:
        """Whether ``path`` is this API's (its prefix, or below it)."""
        return bool(self.prefix) and (path == self.prefix or path.startswith(self.prefix + "/"))


class ProblemShape(ErrorShape):
    """SaladCloud's: an RFC 7807 problem."""

    def body(self, status: int, message: str, code: str, field: str | None) -> dict[str, Any]:
        """``{type, title, status, detail}``; the detail is never empty."""
        title = TITLES.get(status, "Error")
        return {"type": "about:blank", "title": title, "status": status, "detail": message or title}


class DaestroShape(ErrorShape):
    """Daestro's envelope."""

    def body(self, status: int, message: str, code: str, field: str | None) -> dict[str, Any]:
        """``{"ok": false, "message": ...}``."""
        return {"ok": False, "message": message}


class QuedupShape(ErrorShape):
    """Quedup's error object."""

    def body(self, status: int, message: str, code: str, field: str | None) -> dict[str, Any]:
        """``{"error": ...}``."""
        return {"error": message}


NATIVE = ErrorShape("")
SALAD = ProblemShape("/api/public", media_type=PROBLEM, challenge="Salad-Api-Key")
DAESTRO = DaestroShape("/v1/client")
QUEDUP = QuedupShape("/jobs")
# GA4GH TES: its OpenAPI document defines no error body, so ours (``{code, message, field}``);
# a 401 offers Basic too, the scheme TES clients send a token with (as the password).
TES = ErrorShape("/ga4gh/tes/v1", challenge='Bearer, Basic realm="orchestrator"')
DROP_INS = (SALAD, DAESTRO, QUEDUP, TES)


def shape_for(path: str) -> ErrorShape:
    """The shape of the errors answered on ``path``: a drop-in API's under its prefix, else the
    native one."""
    for shape in DROP_INS:
        if shape.owns(path):
            return shape
    return NATIVE
