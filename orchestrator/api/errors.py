"""The one table from domain errors to HTTP responses: ``{code, message, field}``.

Validation messages name the field and the reason but never echo the input, so a secret value
sent in a bad request cannot come back in the error.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from orchestrator.api.error_shapes import shape_for
from orchestrator.errors import (
    Conflict,
    DatabaseUnavailable,
    EngineUnavailable,
    Forbidden,
    IdempotencyKeyReused,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    OrchestratorError,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
)
from orchestrator.schemas.common import ErrorPublic

logger = logging.getLogger(__name__)

HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
}

STATUS_BY_ERROR: dict[type[OrchestratorError], int] = {
    InvalidRequest: 400,
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    LimitExceeded: 422,
    IdempotencyKeyReused: 422,
    TooManyRequests: 429,
    EngineUnavailable: 503,
    DatabaseUnavailable: 503,
}
# How long a client should wait before trying again after a 503 of the database (seconds).
DATABASE_RETRY_AFTER = "1"


# What each documented error status means, for the OpenAPI document; the body is always
# ``ErrorPublic``.
ERROR_DESCRIPTIONS = {
    400: "The request is not valid: `field` names the part at fault and `message` says why.",
    401: "No token was sent, or it is unknown or revoked.",
    403: "The token may not do this: it is read-only, for another project, or not an admin's; "
    "or the container policy refuses an option.",
    404: "The project, or the resource the path names, does not exist.",
    409: "The request conflicts with the resource's current state, or the project holds as "
    "many of these as the server allows (`limit_reached`, naming the setting).",
    413: "The request body, or a part of it, is larger than the server's limit.",
    415: "The request has a body that is not JSON (its `Content-Type`).",
    422: "The request is over one of the server's limits (e.g. the number of parameters), or "
    "its `Idempotency-Key` was used with another request (`idempotency_key_reused`).",
    429: "Too many requests of this kind are open at once (e.g. a token's live streams); "
    "`Retry-After` says when to try again.",
}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses=`` for the error statuses an operation can answer."""
    return {
        status: {"model": ErrorPublic, "description": ERROR_DESCRIPTIONS[status]}
        for status in statuses
    }


def headers_for(exc: OrchestratorError) -> dict[str, str] | None:
    """The headers a domain error's response carries, and logs a database that did not answer
    (an outage is logged once for the process by ``storage.db.Outage``, not once per request)."""
    if isinstance(exc, Unauthorized):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, TooManyRequests):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, DatabaseUnavailable):
        logger.log(
            logging.DEBUG if exc.outage else logging.WARNING,
            "the database did not answer: %s",
            exc.reason,
            extra={"action": "request_database_unavailable"},
        )
        return {"Retry-After": DATABASE_RETRY_AFTER}
    return None


def status_for(exc: OrchestratorError) -> int:
    """The HTTP status of a domain error (the nearest mapped base class wins)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


def _location(loc: tuple[Any, ...]) -> str:
    # Only the first part says where the value was sent; a field may be named "path" too.
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    parts = [str(p) for p in loc]
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


def _schema_name(body: dict[str, Any]) -> str:
    """The component a documented body refers to ('' for an inline schema)."""
    return str(body.get("schema", {}).get("$ref", "")).rpartition("/")[2]


def correct_error_responses(document: dict[str, Any]) -> None:
    """Make FastAPI's OpenAPI ``document`` true about error responses, in place.

    FastAPI documents a 422 with its own validation body on every operation with parameters, but
    this API answers bad input with a 400 and ``ErrorPublic``: drop what it never sends. And it
    gives the extra responses of a text/plain operation (logs) the text/plain media type, but an
    error body is always JSON.
    And an operation with a path or query parameter answers 400 to a NUL character in one
    (``deps.refuse_nul_characters``), in the body of its other errors (a drop-in API's own).
    """
    for item in document.get("paths", {}).values():
        for operation in item.values():
            answers = operation.get("responses", {})
            for status, answer in list(answers.items()):
                bodies = {_schema_name(body): body for body in answer.get("content", {}).values()}
                if "HTTPValidationError" in bodies:
                    del answers[status]
                elif ErrorPublic.__name__ in bodies:
                    answer["content"] = {"application/json": bodies[ErrorPublic.__name__]}
            _document_bad_parameters(operation)
    schemas = document.get("components", {}).get("schemas", {})
    schemas.pop("HTTPValidationError", None)
    schemas.pop("ValidationError", None)


def _document_bad_parameters(operation: dict[str, Any]) -> None:
    answers = operation.get("responses", {})
    parameters = operation.get("parameters", [])
    if "400" in answers or not any(p.get("in") in ("path", "query") for p in parameters):
        return
    # The body its 401 shows is its error shape (a drop-in API's own); an operation open to
    # all (none with parameters is, today) answers in the native one.
    content = answers.get("401", {}).get("content") or {
        "application/json": {"schema": {"$ref": f"#/components/schemas/{ErrorPublic.__name__}"}}
    }
    answers["400"] = {
        "description": "A path or query parameter is not valid (it holds a NUL character).",
        "content": copy.deepcopy(content),
    }


def _document_errors(app: FastAPI) -> None:
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = generate()  # FastAPI keeps it as app.openapi_schema, so this runs once
        correct_error_responses(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]


def install(app: FastAPI) -> None:
    """Register the error handlers on ``app`` and document them in its OpenAPI document. Each
    answers in the shape of the API its path belongs to (``error_shapes.shape_for``): these
    handlers see what no route caught (an unknown route, a wrong method, a crash), which under a
    drop-in API's prefix is still that API's to say."""
    _document_errors(app)

    @app.exception_handler(OrchestratorError)
    async def _domain(request: Request, exc: OrchestratorError) -> Response:
        status = status_for(exc)
        if status == 500:
            logger.error("request failed: %s", exc.message, extra={"action": "request_failed"})
        return shape_for(request.url.path).response(
            status, exc.message, code=exc.code, field=exc.field, headers=headers_for(exc)
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        message, field = validation_message(exc)
        return shape_for(request.url.path).response(
            400, message, code="invalid_request", field=field
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        status, field = exc.status_code, None
        code = HTTP_CODES.get(status, "http_error")
        message = str(exc.detail)
        headers = dict(exc.headers or {})
        if status == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif status == 405:
            headers["Allow"] = ", ".join(_allowed_methods(request))
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
        return shape_for(request.url.path).response(
            status, message, code=code, field=field, headers=headers
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> Response:
        logger.error(
            "unexpected error: %s", type(exc).__name__, exc_info=exc, extra={"action": "crash"}
        )
        return shape_for(request.url.path).response(
            500, "internal error; the server log has the details", code="internal"
        )
