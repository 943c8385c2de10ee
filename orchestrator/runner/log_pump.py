"""The log of one attempt: read from Docker, split into lines, mask secrets, batch, bound.

A pump thread follows the container's output; the attempt's supervisor calls ``take()`` on its
own clock and passes what it gets through the attempt's ``LogBudget`` (``logbudget.py``).
Each stream (stdout, stderr) has its own partial line, so neither splits a line of the other.
Secrets are masked on whole lines, so a value split across two Docker frames is still masked. A
line without its newline is held back until the newline arrives, the output ends, or it grows
past ``MAX_PARTIAL_LINE`` characters. Docker may end a followed stream before its last frames
arrive: once the container has exited, the pump reads what is stored after the last frame it
took (``FrameCursor``), so the output is complete. Nothing here touches the database.
"""

from __future__ import annotations

import codecs
import heapq
import logging
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Protocol

from orchestrator.docker.log_stream import STDERR, STDOUT, LogFrame
from orchestrator.errors import OrchestratorError
from orchestrator.rules.masking import Masker

logger = logging.getLogger(__name__)

MAX_PARTIAL_LINE = 64 * 1024  # characters of one stream's line held before it is let go
# Characters of masked text the pump holds for the supervisor before it stops reading, so a
# slow database cannot make it buffer without bound (Docker keeps the output in its log file
# meanwhile, and the container is never held up by it).
MAX_READY = 1024 * 1024
STREAMS = (STDOUT, STDERR)
# Messages read back from the end of the log once the container has exited, to find there the
# last frame the followed stream gave: Docker finds them from the log's end, while a read
# ``since`` a time goes through the whole log (about 0.5 s per 100k lines, each stream).
TAIL_FRAMES = 256
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class LogReader(Protocol):
    """Reads one container's log: ``DockerEngine.logs`` with the container given."""

    def __call__(
        self,
        *,
        since: int | None,
        follow: bool,
        stream: int | None = None,
        tail: int | None = None,
    ) -> Iterator[LogFrame]: ...


@dataclass
class _Position:
    """How far one stream has been read: Docker's time of the last frame taken, and how many
    frames with that time were taken (pieces of a long line share one time)."""

    time: int = -1
    count: int = 0


class FrameCursor:
    """How far each stream of one container's output has been read, to the frame.

    Within one stream Docker's times never go back, and a read ``since`` a time lists every
    frame stamped at or after it in the order Docker stored them. So a frame's place in its
    stream is (time, n) where n counts the frames before it with the same time, and a read
    since the last time taken, skipping the first ``count`` frames with exactly that time,
    gives exactly the frames not taken yet: none twice, none left out, however many share the
    boundary's time. Each stream is read on its own: across streams times are not in order (a
    long line's later pieces keep the time of its first, while the other stream goes on).
    """

    def __init__(self) -> None:
        self._taken = {stream: _Position() for stream in STREAMS}

    def take(self, frame: LogFrame) -> None:
        """Count ``frame`` as read: the next in its stream's order."""
        taken = self._taken[frame.stream]
        if frame.time == taken.time:
            taken.count += 1
        else:
            taken.time, taken.count = frame.time, 1

    def since(self, stream: int) -> int | None:
        """The time a read of ``stream`` must start at (None: nothing of it was taken)."""
        taken = self._taken[stream]
        return taken.time if taken.count else None

    def unseen(self, frames: Iterable[LogFrame]) -> Iterator[LogFrame]:
        """The frames of a read (of each stream from its ``since()`` or earlier) not taken yet.

        Only filters: the reader takes each frame it uses, as it uses it.
        """
        runs = {stream: _Position() for stream in STREAMS}
        for frame in frames:
            run = runs[frame.stream]
            if frame.time == run.time:
                run.count += 1
            else:
                run.time, run.count = frame.time, 1
            taken = self._taken[frame.stream]
            if (run.time, run.count) > (taken.time, taken.count):
                yield frame

    def after(self, stream: int, frames: Sequence[LogFrame]) -> int | None:
        """Where, in ``frames``, the frames after the last of ``stream`` taken start.

        ``frames``: the last of the log's frames (both streams) in the order Docker stored
        them. None when they do not reach back to a frame of ``stream`` stamped before the last
        taken (or do not hold it): which of those with its time was taken last is then unknown.
        Whether they are the whole log is not asked: a tail of a rotated log could seem so.
        """
        taken = self._taken[stream]
        run: int | None = None  # frames seen with the last taken time, once it is known
        for index, frame in enumerate(frames):
            if frame.stream != stream:
                continue
            if frame.time < taken.time:
                run = 0
            elif frame.time > taken.time:
                return None
            elif run is not None:
                run += 1
                if run == taken.count:
                    return index + 1
        return None

    def last_time(self) -> int | None:
        """The latest time taken in any stream (None before the first frame)."""
        times = [taken.time for taken in self._taken.values() if taken.count]
        return max(times) if times else None


@dataclass
class _Stream:
    """One stream's text not yet let go: its decoder and the start of its open line."""

    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )
    partial: str = ""
    held_since: int | None = None  # Docker's time of the first frame of the held text


class LogPump:
    """Collects one container's output as masked text, ready to be stored in batches."""

    def __init__(
        self, logs: LogReader, secret_values: Iterable[str], since: int | None = None
    ) -> None:
        """``since``: Docker's time (ns) to start at; None for the whole log."""
        self._logs = logs
        self._since = since
        self._secrets = [v for v in secret_values if v]
        self._mask = Masker(self._secrets)  # once per attempt: see Masker
        # A long line is let go in pieces; this many characters stay behind at each cut, since
        # they may begin a secret value that the next frame completes. UTF-8 bytes rather than
        # characters: a character Docker cut at 16 KiB comes back as one U+FFFD per byte.
        self._keep_back = max((len(v.encode()) for v in self._secrets), default=1) - 1
        self._streams = {stream: _Stream() for stream in STREAMS}
        self._cursor = FrameCursor()
        self._last: LogFrame | None = None  # the last frame taken, of either stream
        self._mutex = threading.Lock()
        self._lock = threading.Condition(self._mutex)
        self._ready: deque[tuple[int, str]] = deque()  # (stream, text), in the order let go
        self._ready_size = 0
        self._open: int | None = None  # the stream whose line the text let go ends inside
        self._resume: datetime | None = None
        self._exited = self._stopped = False
        self._settled = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="log-pump", daemon=True)
        self.error: str | None = None

    def start(self) -> None:
        """Start reading in a background thread."""
        self._thread.start()

    def container_exited(self) -> None:
        """The container has exited: once the followed stream ends, read what it left out."""
        self._exited = True
        self._settled.set()

    def stop(self) -> None:
        """Stop reading (the attempt is left to another runner): nothing more is gathered."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        self._settled.set()

    def join(self, timeout: float) -> bool:
        """Wait for the pump to end; True if it did."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _pump(self) -> None:
        try:
            self._read(self._logs(since=self._since, follow=True))
        except OrchestratorError as exc:
            # Whatever it left out is read below, once the container has exited.
            self._failed(exc)
        self._settled.wait()
        try:
            if self._exited and not self._stopped:
                rest = self._rest_from_tail()
                self._read(self._cursor.unseen(self._catch_up()) if rest is None else rest)
        except OrchestratorError as exc:
            self._failed(exc)
        finally:
            for stream in STREAMS:
                self.feed(b"", final=True, stream=stream)

    def _rest_from_tail(self) -> list[LogFrame] | None:
        """What the followed stream left out, when the log's last ``TAIL_FRAMES`` frames reach
        back to the last frame it gave; else None (each stream is then read from its position).

        The followed stream gives the log's frames in the order Docker stored them, so what
        it left out is all that comes after the last frame taken. A failed read is no answer:
        the reads from each stream's position decide.
        """
        try:
            tail = list(self._logs(since=None, follow=False, tail=TAIL_FRAMES))
        except OrchestratorError:
            return None
        last = self._last
        if last is None:
            return None
        start = self._cursor.after(last.stream, tail)
        # The frame found must be the one taken; anything else is left to the full reads.
        if start is None or tail[start - 1].data != last.data:
            return None
        return [f for f in tail[start:] if self._since is None or f.time >= self._since]

    def _catch_up(self) -> Iterator[LogFrame]:
        """What Docker stored from each stream's position on, in about the order it came.

        Docker often ends a followed stream (the container exited) before the last frames reach
        it, most often a last line without a newline; a broken stream leaves out more.
        """
        reads = []
        for stream in STREAMS:
            since = self._cursor.since(stream)
            reads.append(
                self._logs(
                    since=self._since if since is None else since, follow=False, stream=stream
                )
            )
        return heapq.merge(*reads, key=lambda frame: frame.time)

    def _failed(self, exc: OrchestratorError) -> None:
        self.error = exc.message
        logger.warning("log stream failed: %s", exc.message, extra={"action": "log_stream_failed"})

    def _read(self, frames: Iterable[LogFrame]) -> None:
        for frame in frames:
            # The condition's own lock: the same lock, without the condition's Python-level
            # wrapper around taking it, once per frame.
            with self._mutex:
                # Hold the stream rather than the text while the supervisor is behind.
                while self._ready_size > MAX_READY and not self._stopped:
                    self._lock.wait()
                if self._stopped:
                    return
                self._cursor.take(frame)
                self._last = frame
                self._add(frame.stream, frame.data, frame.time, final=False)

    def feed(self, data: bytes, final: bool = False, stream: int = STDOUT) -> None:
        """Add raw output of one stream; complete lines become ready to take. ``final``: the
        stream has ended, its open line is let go as it is."""
        with self._lock:
            self._add(stream, data, None, final)

    def _add(self, stream: int, data: bytes, time: int | None, final: bool) -> None:
        state = self._streams[stream]
        # PostgreSQL text cannot hold NUL; it becomes the replacement character, as bad UTF-8 does.
        text = state.decoder.decode(data, final=final).replace("\x00", "\ufffd")
        if not state.partial and not final and text.endswith("\n"):
            # The usual frame, one whole line, goes as it is (as below, without the copies).
            self._let_go(stream, self._mask(text))
            return
        if text and not state.partial and not final:
            state.held_since = time
        state.partial += text
        cut = len(state.partial)
        if not final:
            cut = state.partial.rfind("\n") + 1
            if len(state.partial) - cut > MAX_PARTIAL_LINE:
                # Mask the long line whole before cutting it, so no value straddles the cut.
                state.partial = self._mask(state.partial)
                cut = max(len(state.partial) - self._keep_back, 0)
        if cut:
            self._let_go(stream, self._mask(state.partial[:cut]))
            state.partial = state.partial[cut:]
        if not state.partial:
            state.held_since = None

    def _let_go(self, stream: int, text: str) -> None:
        """Make ``text`` of ``stream`` ready; it starts a new line if another stream's is open."""
        if self._open not in (None, stream):
            text = "\n" + text
        self._open = None if text.endswith("\n") else stream
        self._ready.append((stream, text))
        self._ready_size += len(text)

    def take(self) -> str:
        """All masked text gathered since the last call ("" when there is none)."""
        return "".join(text for _, text in self.take_runs())

    def take_runs(self) -> list[tuple[int, str]]:
        """``take``, as runs of one stream each (``STDOUT``, ``STDERR``), in order: one run per
        change of stream, not per line (the usual output is one stream's)."""
        with self._lock:
            ready = list(self._ready)
            self._ready.clear()
            self._ready_size = 0
            self._resume = self._resume_point()
            self._lock.notify_all()
        return [
            (stream, "".join(text for _, text in run))
            for stream, run in groupby(ready, key=lambda piece: piece[0])
        ]

    @property
    def resume_time(self) -> datetime | None:
        """Where a runner adopting this attempt should read from, as of the last ``take()``:
        after the last frame taken, or, while a stream holds an unfinished line, that line's
        first frame (its other pieces keep its time), so its end is never read without its
        start (which could leave half a secret value unmasked). None while nothing was read.

        Stored with each batch, it makes adoption exact in practice but not in every case: the
        database keeps one time per batch, to the microsecond, not the cursor (a nanosecond
        time and a count per stream). Reading from the first microsecond after the last frame
        leaves out a frame stamped in that same microsecond, or one the other stream stamped a
        few microseconds earlier but Docker stored later (its two copiers race); reading from
        an unfinished line's first piece repeats what the other stream stored since. Exact
        adoption needs the cursor stored with the batch: a column of ``job_logs``.
        """
        return self._resume

    def _resume_point(self) -> datetime | None:
        held = [s.held_since for s in self._streams.values() if s.held_since is not None]
        if held:
            # Rounded down to the microsecond the database keeps: the whole line is read again.
            return _EPOCH + timedelta(microseconds=min(held) // 1000)
        last = self._cursor.last_time()
        if last is None:
            return None
        return _EPOCH + timedelta(microseconds=last // 1000 + 1)


def resume_since(time: datetime | None) -> int | None:
    """A stored ``resume_time`` as the ``since`` (ns) of the adopting runner's pump."""
    return None if time is None else (time - _EPOCH) // timedelta(microseconds=1) * 1000
