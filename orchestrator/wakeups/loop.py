"""The one shape of a background loop: run a pass, then wait until a watched topic is published,
the next pass is due, or the loop is stopped; again until stopped.

A pass that raises is logged with its traceback and tried again after ``failure_wait``. A
database that does not answer is no bug: an outage is logged once for the process by
``storage.db.Outage`` and the loop only waits; a database that answered too late is one line
without a traceback. A loop whose thread ends any other way than by being stopped (an error
its pass handling did not catch) has died: it logs that once, with the traceback, calls
``on_death``, and says ``died`` in ``state``, which the process's health check reports.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from orchestrator.errors import DatabaseUnavailable
from orchestrator.rules.loop_states import LoopState
from orchestrator.wakeups.hub import Hub

logger = logging.getLogger(__name__)

_serial = itertools.count(1)


def _never() -> bool:
    return False


def _nothing() -> Iterable[str]:
    return ()


@dataclass(eq=False)
class Loop:
    """One background loop, run by its own thread from ``start`` to ``stop``.

    ``run_once`` does one pass; ``next_wait`` says how long to wait after it (0: go again at
    once), ``topics`` what publishes cut that wait short, and ``finished`` whether the loop's
    owner is done with it (checked before each pass and each wait). ``on_exit`` runs when the
    thread ends, however it ends. ``min_interval``: a publish wakes the loop at once, but no
    sooner than this after the last pass started, so a stream of publishes (a submit burst)
    costs one pass per interval rather than one per publish.
    """

    name: str
    hub: Hub
    run_once: Callable[[], object]
    next_wait: Callable[[], float]
    failure_wait: Callable[[], float]
    # The log line of a failed pass, and its ``action``.
    failed: str
    action: str
    topics: Callable[[], Iterable[str]] = _nothing
    finished: Callable[[], bool] = _never
    on_exit: Callable[[], None] | None = None
    on_death: Callable[[BaseException], None] | None = None
    thread_name: str = ""
    min_interval: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _died: BaseException | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Its own topic: ``stop`` wakes this loop's wait, whatever it watches.
        self._wake = f"loop:{self.name}:{next(_serial)}"

    @property
    def state(self) -> LoopState:
        """Whether the loop runs, was stopped, or died."""
        if self._died is not None:
            return LoopState.DIED
        if self._thread is None:
            return LoopState.NOT_STARTED
        if self._thread.is_alive():
            return LoopState.RUNNING
        return LoopState.STOPPED

    @property
    def alive(self) -> bool:
        """True while the loop's thread runs, its exit handling included."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def stopping(self) -> bool:
        """True once ``stop`` was called."""
        return self._stop.is_set()

    def start(self) -> None:
        """Run the loop in a daemon thread."""
        self._thread = threading.Thread(
            target=self._run, name=self.thread_name or self.name, daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the pass under way (if any) and wait for the thread up to ``timeout``."""
        self._stop.set()
        self.hub.publish_local(self._wake)
        self.join(timeout)

    def join(self, timeout: float | None = None) -> None:
        """Wait for the thread to end, up to ``timeout``."""
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _done(self) -> bool:
        return self._stop.is_set() or self.finished()

    def _run(self) -> None:
        try:
            while not self._done():
                seen = {topic: self.hub.version(topic) for topic in (self._wake, *self.topics())}
                started = time.monotonic()
                wait = self._pass()
                if wait > 0 and not self._done():
                    self.hub.wait(seen, wait)
                    early = started + self.min_interval - time.monotonic()
                    if early > 0:
                        self._stop.wait(early)
        except BaseException as exc:  # whatever ends the thread is reported
            self._died = exc
            logger.critical(
                "the %s loop died (%s); it no longer runs until the process restarts",
                self.name,
                type(exc).__name__,
                exc_info=exc,
                extra={"action": "loop_died", "loop": self.name},
            )
            if self.on_death is not None:
                self.on_death(exc)
        finally:
            if self.on_exit is not None:
                self.on_exit()

    def _pass(self) -> float:
        """One pass and the wait after it."""
        try:
            self.run_once()
            return self.next_wait()
        except DatabaseUnavailable as exc:  # no bug of ours: no traceback
            # An outage has its one line for the process (``storage.db.Outage``).
            if not exc.outage:
                logger.warning("%s (%s)", self.failed, exc.reason, extra={"action": self.action})
            return self.failure_wait()
        except Exception:  # tried again after failure_wait
            logger.exception(self.failed, extra={"action": self.action})
            return self.failure_wait()
