"""An ASGI middleware that refuses request bodies larger than the configured limit (413).

It answers before routing, so the shape of its 413 is chosen by the path (a drop-in API's
own under its prefix), as every other error's is."""

from __future__ import annotations

from typing import Any

from starlette.exceptions import HTTPException

from orchestrator.api.error_shapes import shape_for

Scope = dict[str, Any]
Message = dict[str, Any]


class BodyTooLarge(HTTPException):
    """Raised inside ``receive`` when a streamed body passes the limit (mapped to 413)."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(413, too_large_message(max_bytes))


def too_large_message(max_bytes: int) -> str:
    """The message of a 413 response."""
    return f"the request body is larger than the limit of {max_bytes} bytes (ORCH_MAX_BODY_BYTES)"


class BodySizeLimit:
    """Checks ``Content-Length`` up front and counts streamed bytes as they arrive."""

    def __init__(self, app: Any, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message: Message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        await self.app(scope, limited_receive, send)

    async def _refuse(self, scope: Scope, receive: Any, send: Any) -> None:
        refusal = shape_for(scope["path"]).response(
            413, too_large_message(self.max_bytes), code="payload_too_large", field="body"
        )
        await refusal(scope, receive, send)
