"""Errors of the drop-in APIs: each product answers every error in its own shape
(``api/error_shapes.py``), bad input with a 400 (not FastAPI's 422), and a body that is not JSON
with a 415. A product's route class names its shape and adapts the words; the catching is here,
once. What no route catches (unknown routes, wrong methods, the body-size limit) the app's
handlers and middleware answer in the same shape, chosen by the path."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError as PydanticValidationError

from orchestrator.api.error_shapes import ErrorShape
from orchestrator.api.errors import headers_for, status_for, validation_message
from orchestrator.errors import DatabaseUnavailable, OrchestratorError


def is_json(content_type: str | None) -> bool:
    """Whether a ``Content-Type`` names JSON: ``application/json`` or ``application/*+json``
    (a merge patch), parameters aside."""
    media = (content_type or "").partition(";")[0].strip().lower()
    kind, _, subtype = media.partition("/")
    return kind == "application" and (subtype == "json" or subtype.endswith("+json"))


class CompatRoute(APIRoute):
    """A route whose errors are rendered in its product's ``shape``; the other hooks adapt the
    words."""

    shape: ErrorShape  # each product's route class names its own

    def render(self, status: int, message: str) -> Response:
        """The product's error response."""
        return self.shape.response(status, message)

    def validation_text(self, exc: RequestValidationError) -> str:
        """What a request the route's models refused says."""
        return validation_message(exc)[0]

    def refusal_text(self, exc: PydanticValidationError) -> str:
        """What a native request, built from input the product's models accepted, says when the
        native models refuse it after all."""
        return "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'body'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False)
        )

    def domain_error(self, exc: OrchestratorError) -> tuple[int, str]:
        """The status and message of a native service's refusal."""
        return status_for(exc), exc.message

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped to render its errors the product's way."""
        handler = super().get_route_handler()

        async def shaped_handler(request: Request) -> Response:
            try:
                # A body sent as something else than JSON (a form, text, no type) is refused
                # as such, rather than read as a body of the wrong shape.
                if (
                    self.body_field is not None
                    and not is_json(request.headers.get("content-type"))
                    and await request.body()
                ):
                    return self.render(
                        415, "content-type: the body must be JSON (application/json)"
                    )
                return await handler(request)
            except RequestValidationError as exc:
                return self.render(400, self.validation_text(exc))
            except PydanticValidationError as exc:
                return self.render(400, self.refusal_text(exc))
            except OrchestratorError as exc:
                refusal = self.render(*self.domain_error(exc))
                if isinstance(exc, DatabaseUnavailable):
                    # Its Retry-After (a 401's challenge is the shape's to say).
                    refusal.headers.update(headers_for(exc) or {})
                return refusal

        return shaped_handler
