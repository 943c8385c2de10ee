"""The bound on one attempt's stored log: keep the head and the tail, mark what was cut.

Pure: ``LogBudget`` is given masked text and answers with the texts to store, in order (with
the stream each came from, when it is given one: ``add_stream``).
"""

from __future__ import annotations

from collections import deque
from itertools import groupby


def cutting_marker(max_bytes: int, tail_bytes: int) -> str:
    """The line stored once, when an attempt's output first has to be cut."""
    return (
        f"[orchestrator: log over ORCH_MAX_LOG_BYTES ({max_bytes} bytes); output is being cut,"
        f" the last {tail_bytes} bytes will be kept]\n"
    )


def cut_marker(cut_bytes: int, cut_lines: int) -> str:
    """The line stored where output was left out, just before the tail that was kept."""
    return f"[orchestrator: {cut_bytes} bytes ({cut_lines} lines) cut here]\n"


class LogBudget:
    """Bounds the stored log of one attempt to ``max_bytes`` (of UTF-8) plus marker lines.

    The first half is the head, stored as it comes. After it, output is held in memory as a
    rolling tail of at most the other half; once that overflows, the oldest held bytes are cut
    (at a line start where one is near, never inside a character) and counted, and the cutting
    marker is stored once, so followers see that output goes on. ``flush()`` hands over a marker
    naming what was cut, then the tail. A log within ``max_bytes`` is stored exactly as it came.
    Pure: it is given masked text and answers with the texts to store, in order.
    """

    def __init__(self, max_bytes: int, stored: int = 0) -> None:
        """A budget of ``max_bytes``; ``stored``: bytes the attempt stored before (adoption)."""
        self.max_bytes = max_bytes
        self.head_bytes = max_bytes // 2
        self.tail_bytes = max_bytes - self.head_bytes
        self.cut_bytes = 0
        self.cut_lines = 0
        self._head_left = max(self.head_bytes - stored, 0)
        # A stored log longer than the head went on past it: take the marker as stored already,
        # rather than repeat it after the tail an earlier runner stored when it let go.
        self._marked = stored > self.head_bytes
        self._head_open_line = False
        self._tail: deque[bytes] = deque()
        self._tail_streams: deque[int | None] = deque()  # the stream of each piece of the tail
        self._tail_start = 0  # bytes of ``_tail[0]`` already cut
        self._tail_size = 0

    def add(self, text: str) -> list[str]:
        """What to store now of ``text``: itself while the head has room, the marker once."""
        return [stored for _, stored in self.add_stream(None, text)]

    def add_stream(self, stream: int | None, text: str) -> list[tuple[int | None, str]]:
        """``add`` for the text of one ``stream``: each text to store with its stream (None for
        the marker, the orchestrator's own line)."""
        data = text.encode()
        stored: list[tuple[int | None, str]] = []
        if self._head_left:
            cut = min(self._head_left, len(data))
            while cut < len(data) and _is_continuation(data[cut]):
                cut -= 1
            # What does not fit closes the head, even the rest of a character cut short.
            self._head_left = 0 if cut < len(data) else self._head_left - cut
            if cut:
                stored.append((stream, data[:cut].decode()))
                self._head_open_line = data[cut - 1] != ord("\n")
            data = data[cut:]
        if data:
            self._tail.append(data)
            self._tail_streams.append(stream)
            self._tail_size += len(data)
        excess = self._tail_size - self.tail_bytes
        if excess > 0:
            self._cut(self._cut_point(excess))
            if not self._marked:
                self._marked = True
                marker = cutting_marker(self.max_bytes, self.tail_bytes)
                stored.append((None, "\n" + marker if self._head_open_line else marker))
        return stored

    def flush(self) -> list[str]:
        """What to store of the held output: the cut marker (if any was cut), then the tail.

        The tail and the counts start again empty, so a later flush adds only newer output.
        """
        return [stored for _, stored in self.flush_streams()]

    def flush_streams(self) -> list[tuple[int | None, str]]:
        """``flush`` with each text's stream: the marker's None, the tail's a text per run of
        pieces of one stream."""
        stored: list[tuple[int | None, str]] = []
        if self.cut_bytes:
            stored.append((None, cut_marker(self.cut_bytes, self.cut_lines)))
        if self._tail:
            self._tail[0] = self._tail[0][self._tail_start :]
            pieces = zip(self._tail_streams, self._tail, strict=True)
            for stream, run in groupby(pieces, key=lambda piece: piece[0]):
                stored.append((stream, b"".join(data for _, data in run).decode()))
        self._tail.clear()
        self._tail_streams.clear()
        self._tail_start = self._tail_size = self.cut_bytes = self.cut_lines = 0
        return stored

    def _cut_point(self, excess: int) -> int:
        """How many held bytes to cut: up to the first line start at or after ``excess`` if it
        keeps at least half the tail, else up to the first whole character there."""
        limit = excess + self.tail_bytes // 2
        offset = -self._tail_start  # where each piece begins, counted from the first held byte
        for piece in self._tail:
            if offset > limit:
                break
            # A newline at excess - 1 or later opens a line at excess or later.
            newline = piece.find(b"\n", max(excess - 1 - offset, 0))
            if newline != -1:
                if offset + newline + 1 <= limit:
                    return offset + newline + 1
                break
            offset += len(piece)
        offset = -self._tail_start
        for piece in self._tail:
            if excess < offset + len(piece):
                break
            offset += len(piece)
        at = excess - offset
        while at < len(piece) and _is_continuation(piece[at]):
            at += 1
        return offset + at

    def _cut(self, count: int) -> None:
        """Drop the first ``count`` held bytes, counting them and the line ends among them."""
        self.cut_bytes += count
        self._tail_size -= count
        while count:
            piece = self._tail[0]
            end = min(len(piece), self._tail_start + count)
            self.cut_lines += piece.count(b"\n", self._tail_start, end)
            count -= end - self._tail_start
            if end == len(piece):
                self._tail.popleft()
                self._tail_streams.popleft()
                self._tail_start = 0
            else:
                self._tail_start = end
        if self._tail_start > self.tail_bytes:
            # Let go of the cut part of a large piece, so memory stays near the tail's size.
            self._tail[0] = self._tail[0][self._tail_start :]
            self._tail_start = 0


def _is_continuation(byte: int) -> bool:
    """True for a UTF-8 byte that continues a character (cutting before it would split one)."""
    return byte & 0xC0 == 0x80
