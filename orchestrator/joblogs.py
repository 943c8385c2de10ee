"""The log pump of one attempt: stream from Docker, split into lines, mask secrets, batch.

A pump thread reads the container's output; the attempt's supervisor calls ``take()`` on its
own clock and stores what it gets in one insert. Secrets are masked on whole lines, so a value
split across two Docker chunks is still masked. A line without its newline is held back until
the newline arrives, the stream ends, or it grows past ``MAX_PARTIAL_LINE`` bytes.
"""

from __future__ import annotations

import codecs
import logging
import threading
from collections.abc import Callable, Iterable, Iterator

from orchestrator.errors import OrchestratorError
from orchestrator.secrets import mask

logger = logging.getLogger(__name__)

MAX_PARTIAL_LINE = 64 * 1024


class LogPump:
    """Collects one container's output as masked text, ready to be stored in batches."""

    def __init__(self, stream: Callable[[], Iterator[bytes]], secret_values: Iterable[str]) -> None:
        self._stream = stream
        self._secrets = [v for v in secret_values if v]
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.Lock()
        self._ready: list[str] = []
        self._partial = ""
        self._thread = threading.Thread(target=self._pump, name="log-pump", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        """Start reading in a background thread."""
        self._thread.start()

    def join(self, timeout: float) -> bool:
        """Wait for the stream to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _pump(self) -> None:
        try:
            for chunk in self._stream():
                self.feed(chunk)
        except OrchestratorError as exc:
            self.error = exc.message
            logger.warning("log stream ended early", extra={"action": "log_stream_failed"})
        finally:
            self.feed(b"", final=True)

    def feed(self, chunk: bytes, final: bool = False) -> None:
        """Add raw output; complete lines become ready to take."""
        text = self._decoder.decode(chunk, final=final)
        with self._lock:
            self._partial += text
            cut = self._partial.rfind("\n") + 1
            if final or len(self._partial) - cut > MAX_PARTIAL_LINE:
                cut = len(self._partial)
            if cut:
                self._ready.append(mask(self._partial[:cut], self._secrets))
                self._partial = self._partial[cut:]

    def take(self) -> str:
        """All masked text gathered since the last call ("" when there is none)."""
        with self._lock:
            text = "".join(self._ready)
            self._ready.clear()
            return text
