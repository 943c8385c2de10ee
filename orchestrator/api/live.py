"""The response of a live stream (a log follow, an event stream): however it ends (the stream
is over, the client left, the server stops) it closes its stream and gives its lease back."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

# Neither the client nor a proxy between may keep the stream back.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class LiveStream(StreamingResponse):
    """A streaming response that calls ``release`` once it is over, however it ends.

    Starlette neither closes the body's generator when the client leaves (it is left suspended
    until garbage collected) nor runs a generator it never started: both are done here, so a
    stream's feed subscription and its token's slot are given back at once.
    """

    def __init__(
        self,
        content: AsyncGenerator[bytes],
        release: Callable[[], None],
        media_type: str,
    ) -> None:
        super().__init__(content, media_type=media_type, headers=HEADERS)
        self._content = content
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Stream the body until it ends or the client leaves; then close it and release."""
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()
            await self._content.aclose()
