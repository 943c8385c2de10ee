"""The one table from domain errors to HTTP responses: ``{code, message, field}``.

Validation messages name the field and the reason but never echo the input, so a secret value
sent in a bad request cannot come back in the error.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from orchestrator.errors import (
    Conflict,
    EngineUnavailable,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
    Unauthorized,
)

logger = logging.getLogger(__name__)

HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}

STATUS_BY_ERROR: dict[type[OrchestratorError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    LimitExceeded: 422,
    EngineUnavailable: 503,
}


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON body of every error response."""
    return {"code": code, "message": message, "field": field}


def status_for(exc: OrchestratorError) -> int:
    """The HTTP status of a domain error (the nearest mapped base class wins)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _location(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    parts = [p for p in parts if not p.startswith("function-") and p != "[key]"]
    return ".".join(parts) or "body"


def validation_message(exc: RequestValidationError) -> tuple[str, str]:
    """('field: reason; ...', first field) without the offending values."""
    messages = []
    first = None
    for error in exc.errors():
        loc = tuple(error.get("loc", ()))
        field = _location(loc)
        reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if "[key]" in loc and field.startswith("secret_env."):
            # A bad secret name may be a value pasted in the wrong place ("TOKEN=s3cr3t"): the
            # error names the mapping, never the text.
            field = "secret_env"
            reason = f"a name is invalid: {reason}"
        elif error.get("type") == "extra_forbidden":
            reason = "unknown field"
        elif error.get("type") == "json_invalid":
            field = "body"
            reason = f"invalid JSON ({error.get('ctx', {}).get('error', 'malformed')})"
        elif error.get("type") == "missing" and field == "body":
            reason = "a JSON body is required"
        first = first or field
        messages.append(f"{field}: {reason}")
    return "; ".join(messages), first or "body"


def _allowed_methods(request: Request) -> list[str]:
    # Starlette's Allow names only the first route matching the path; a path served by several
    # routes (GET and POST on /jobs) needs them all, so ask every route about every method.
    allowed = []
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in request.app.routes):
            allowed.append(method)
    return allowed


def install(app: FastAPI) -> None:
    """Register the error handlers on ``app``."""

    @app.exception_handler(OrchestratorError)
    async def _domain(_request: Request, exc: OrchestratorError) -> JSONResponse:
        status = status_for(exc)
        if status == 500:
            logger.error("request failed: %s", exc.message, extra={"action": "request_failed"})
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field), status_code=status, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = validation_message(exc)
        return JSONResponse(error_body("invalid_request", message, field), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        status, field = exc.status_code, None
        code = HTTP_CODES.get(status, "http_error")
        message = str(exc.detail)
        if status == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            headers = {"Allow": ", ".join(_allowed_methods(request))}
            return JSONResponse(error_body(code, message), status_code=status, headers=headers)
        elif status == 413:
            field = "body"
        elif status == 400:
            # FastAPI's wording for a body it could not decode; say what was wrong with it.
            code, field = "invalid_request", "body"
            cause = exc.__cause__
            if isinstance(cause, UnicodeDecodeError):
                message = "body: not UTF-8 text"
            elif isinstance(cause, RecursionError):
                message = "body: nested too deeply"
            else:
                message = f"body: {message}"
        return JSONResponse(
            error_body(code, message, field), status_code=status, headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        logger.error(
            "unexpected error: %s", type(exc).__name__, exc_info=exc, extra={"action": "crash"}
        )
        return JSONResponse(
            error_body("internal", "internal error; the server log has the details"),
            status_code=500,
        )
