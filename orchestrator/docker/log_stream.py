"""Docker's log stream: the multiplexed frames and HTTP chunks of a logs response, decoded
without copying more than once, and the logs API's time parameter."""

from __future__ import annotations

import functools
import http.client
import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import requests.exceptions

from orchestrator.errors import (
    ContainerFailure,
)

# The stream numbers of Docker's multiplexed output.
STDOUT = 1
STDERR = 2
_FRAME_HEADER = struct.Struct(">BxxxL")  # stream, 3 bytes of padding, payload length
_MAX_CHUNK_LINE = 4096  # bytes of a chunk-size line, extensions included, before it is refused
# Bytes read from a logs response at once, at most: whatever the socket has, across chunks.
_READ_SIZE = 256 * 1024


@dataclass(frozen=True, slots=True)
class LogFrame:
    """One message of a container's output as Docker's log driver stored it.

    A message is one line with its newline, or a 16 KiB piece of a longer line, or what the
    container wrote last without a newline; never more than one line. ``time`` is Docker's clock
    in nanoseconds since the epoch: within one stream it never goes back, and every piece of a
    long line carries the time of its first piece.
    """

    stream: int
    time: int
    data: bytes


class FrameDecoder:
    """Splits Docker's multiplexed stream into (stream, payload) frames, however it is chunked.

    Each frame is an 8-byte header (stream number, 3 zero bytes, big-endian payload length)
    followed by the payload. An incomplete frame is held until the rest of it arrives; the
    pieces of a large one are gathered without copying what came before at each piece.
    """

    def __init__(self) -> None:
        self._held = bytearray()
        self._needed = 0  # bytes the held frame needs before it can be split out

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """The frames completed by ``data``, in order."""
        buffer = data
        if self._held:
            self._held += data
            if len(self._held) < self._needed:
                return []
            buffer = bytes(self._held)
            self._held.clear()
        frames: list[tuple[int, bytes]] = []
        at = 0
        size = len(buffer)
        while size - at >= _FRAME_HEADER.size:
            kind, length = _FRAME_HEADER.unpack_from(buffer, at)
            end = at + _FRAME_HEADER.size + length
            if end > size:
                self._needed = end - at
                break
            frames.append((kind, buffer[at + _FRAME_HEADER.size : end]))
            at = end
        else:
            self._needed = _FRAME_HEADER.size
        self._held += memoryview(buffer)[at:]
        return frames


class ChunkDecoder:
    """Undoes HTTP/1.1 chunked transfer coding (RFC 9112, 7.1), however the bytes are split:
    the body's bytes, and ``done`` once the last chunk has come (its trailers are not read)."""

    def __init__(self) -> None:
        self._held = b""  # the start of a chunk-size line
        self._left = 0  # bytes of the current chunk's data still to come
        self._crlf = 0  # bytes of the CRLF after the current chunk's data still to come
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """The body's bytes in ``data``."""
        buffer = self._held + data
        self._held = b""
        body: list[bytes] = []
        at = 0
        size = len(buffer)
        while at < size and not self.done:
            if self._left or self._crlf:
                at = self._finish_chunk(buffer, at, body)
                continue
            eol = buffer.find(b"\r\n", at)
            if eol < 0:
                if size - at > _MAX_CHUNK_LINE:
                    raise ValueError("a chunk-size line is too long")
                self._held = buffer[at:]
                break
            length = _chunk_size(buffer[at:eol])
            start, end = eol + 2, eol + 2 + length
            self.done = not length
            if end + 2 <= size:
                # The usual case: the whole chunk is here.
                if buffer[end : end + 2] != b"\r\n":
                    raise ValueError("a chunk's data is not followed by CRLF")
                body.append(buffer[start:end])
                at = end + 2
            else:
                self._left, self._crlf, at = length, 2, start
        return b"".join(body)

    def _finish_chunk(self, buffer: bytes, at: int, body: list[bytes]) -> int:
        """Take what ``buffer`` has, from ``at``, of a chunk begun in an earlier ``feed``."""
        if self._left:
            end = min(at + self._left, len(buffer))
            body.append(buffer[at:end])
            self._left -= end - at
            return end
        end = min(at + self._crlf, len(buffer))
        if buffer[at:end] != b"\r\n"[2 - self._crlf : 2 - self._crlf + end - at]:
            raise ValueError("a chunk's data is not followed by CRLF")
        self._crlf -= end - at
        return end


def _chunk_size(line: bytes) -> int:
    """The size a chunk-size line gives (hex digits, then any extensions, which are ignored)."""
    if not line.isalnum():
        line = line.partition(b";")[0].rstrip(b" \t")
    # isalnum() of bytes is ASCII only; it keeps out the sign and underscores int() would take.
    if not line.isalnum():
        raise ValueError(f"a bad chunk size {line!r}")
    return int(line, 16)


def log_frame(kind: int, payload: bytes) -> LogFrame:
    """The frame whose payload starts with Docker's timestamp (``timestamps=1``) and a space."""
    if kind not in (STDOUT, STDERR):
        raise ContainerFailure(f"container logs failed: a log frame of stream {kind}")
    # RFC 3339 in UTC with up to nine decimals: 2024-05-01T12:00:00.123456789Z
    stamp, space, data = payload.partition(b" ")
    whole, _, fraction = stamp[:-1].partition(b".")
    try:
        if not space or not stamp.endswith(b"Z") or len(fraction) > 9:
            raise ValueError(stamp)
        # isdigit() of bytes is ASCII digits only: no sign, space or underscore as int() takes.
        if fraction and not fraction.isdigit():
            raise ValueError(stamp)
        seconds = _epoch_seconds(whole)
    except ValueError as exc:
        raise ContainerFailure("container logs failed: a log frame without a timestamp") from exc
    nanoseconds = int(fraction.ljust(9, b"0")) if fraction else 0
    return LogFrame(stream=kind, time=seconds * 1_000_000_000 + nanoseconds, data=data)


@functools.lru_cache(maxsize=16)
def _epoch_seconds(whole: bytes) -> int:
    """``YYYY-MM-DDTHH:MM:SS`` (UTC) as seconds since the epoch. Cached: consecutive frames
    share their second, and parsing it costs most of reading a short frame."""
    return int(datetime.fromisoformat(whole.decode("ascii")).replace(tzinfo=UTC).timestamp())


def since_parameter(time_ns: int) -> str:
    """``time_ns`` as the logs API's ``since`` ("seconds.nanoseconds"), to the nanosecond."""
    seconds, nanoseconds = divmod(time_ns, 1_000_000_000)
    return f"{seconds}.{nanoseconds:09d}"


def body_blocks(response: requests.Response) -> Iterator[bytes]:
    """A streamed response's body in blocks, each what the connection has when it is read.

    Docker sends each log message as its own HTTP chunk, and urllib3 hands them over one at a
    time, at a cost per chunk well above that of the frame inside it. So when the response is
    plainly chunked and nothing of its body was read yet, its chunks are read here, straight
    from the connection's buffered reader (a private attribute, as docker-py's own attach
    reads it): anything else goes through ``iter_content``.
    """
    raw = getattr(response.raw, "_fp", None)
    reader = getattr(raw, "fp", None)
    if not (
        isinstance(raw, http.client.HTTPResponse)
        and raw.chunked
        and raw.chunk_left is None
        and isinstance(reader, io.BufferedReader)
        and "Content-Encoding" not in response.headers
    ):
        yield from response.iter_content(chunk_size=None)
        return
    chunks = ChunkDecoder()
    while not chunks.done:
        # read1: what the buffer holds, else one read of the socket; it never waits for more.
        block = reader.read1(_READ_SIZE)
        if not block:
            raise requests.exceptions.ChunkedEncodingError("the logs response ended early")
        try:
            body = chunks.feed(block)
        except ValueError as exc:
            raise ContainerFailure(f"container logs failed: {exc}") from exc
        if body:
            yield body
