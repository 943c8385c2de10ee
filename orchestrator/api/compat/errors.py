"""Errors of the drop-in APIs: each product answers every error in its own shape, and bad input
with a 400 (not FastAPI's 422). A product's route class says how it renders; the catching is
here, once."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import ValidationError as PydanticValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from orchestrator.api.errors import headers_for, status_for, validation_message
from orchestrator.errors import DatabaseUnavailable, OrchestratorError


class CompatRoute(APIRoute):
    """A route whose errors are rendered by ``render``; the other hooks adapt the words."""

    def render(self, status: int, message: str) -> Response:
        """The product's error response."""
        raise NotImplementedError

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

    def http_error(self, exc: StarletteHTTPException) -> Response | None:
        """The answer to an HTTP error raised before the handler (a body that is not JSON is a
        400), or None to leave it to the app's handlers."""
        if exc.status_code != 400:
            return None
        return self.render(400, f"body: {exc.detail}")

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """The route's handler, wrapped to render its errors the product's way."""
        handler = super().get_route_handler()

        async def shaped_handler(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError as exc:
                return self.render(400, self.validation_text(exc))
            except PydanticValidationError as exc:
                return self.render(400, self.refusal_text(exc))
            except OrchestratorError as exc:
                refusal = self.render(*self.domain_error(exc))
                if isinstance(exc, DatabaseUnavailable):
                    # Its Retry-After (the product's own 401 headers are the route's to say).
                    refusal.headers.update(headers_for(exc) or {})
                return refusal
            except StarletteHTTPException as exc:
                answer = self.http_error(exc)
                if answer is None:
                    raise
                return answer

        return shaped_handler
