"""The one shape of a background loop: passes, wake-ups, failed passes, stopping, and a thread
that died being noticed."""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable

import pytest

from orchestrator.errors import DatabaseUnavailable
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.loop import Loop, LoopState

LONG = 3600.0  # a wait no test sits through: only a wake-up or a stop ends it
SETTLE = 10.0  # how long a test waits for a thread to get somewhere


class Boom(BaseException):
    """Not an ``Exception``: what a pass's error handling does not catch."""


def make_loop(hub: Hub, run_once: Callable[[], object], **kwargs: object) -> tuple[Loop, list[str]]:
    exits: list[str] = []
    options: dict[str, object] = {
        "next_wait": lambda: LONG,
        "failure_wait": lambda: 0.01,
        "failed": "test pass failed",
        "action": "test_failed",
        "on_exit": lambda: exits.append("exit"),
        **kwargs,
    }
    loop = Loop("test", hub, run_once, **options)  # type: ignore[arg-type]
    return loop, exits


def test_a_watched_topic_cuts_the_wait_short_and_stop_ends_it() -> None:
    hub = Hub()
    passes = threading.Semaphore(0)
    loop, exits = make_loop(hub, passes.release, topics=lambda: ["work"])
    assert loop.state is LoopState.NOT_STARTED
    loop.start()
    assert passes.acquire(timeout=SETTLE)
    assert loop.state is LoopState.RUNNING
    hub.publish("work")
    assert passes.acquire(timeout=SETTLE)  # a second pass, long before the wait ran out
    loop.stop(timeout=SETTLE)
    assert loop.state is LoopState.STOPPED
    assert exits == ["exit"]


def test_a_failed_pass_is_logged_and_tried_again_but_an_outage_is_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors: list[Exception] = [
        RuntimeError("a bug"),
        DatabaseUnavailable("connection refused", outage=True),
        DatabaseUnavailable("the database is locked", outage=False),
    ]
    done = threading.Event()

    def run_once() -> None:
        if errors:
            raise errors.pop(0)
        done.set()

    loop, _ = make_loop(Hub(), run_once)
    loop.start()
    assert done.wait(SETTLE)
    loop.stop(timeout=SETTLE)
    failed = [r for r in caplog.records if getattr(r, "action", None) == "test_failed"]
    # The bug with its traceback; the late answer in one line naming why; the outage is the
    # database's own line.
    assert [(r.levelname, r.exc_info is not None) for r in failed] == [
        ("ERROR", True),
        ("WARNING", False),
    ]
    assert failed[0].exc_info is not None and isinstance(failed[0].exc_info[1], RuntimeError)
    assert "the database is locked" in failed[1].getMessage()
    assert loop.state is LoopState.STOPPED


def test_a_loop_that_died_says_so_once_and_tells_its_owner(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deaths: list[BaseException] = []

    def run_once() -> None:
        raise Boom()

    loop, exits = make_loop(Hub(), run_once, on_death=deaths.append)
    loop.start()
    loop.join(SETTLE)
    assert loop.state is LoopState.DIED
    assert [type(d) for d in deaths] == [Boom]
    assert exits == ["exit"]
    [line] = [r for r in caplog.records if getattr(r, "action", None) == "loop_died"]
    assert line.levelno == logging.CRITICAL
    assert line.getMessage().startswith("the test loop died (Boom)")
    assert line.exc_info is not None
    loop.stop(timeout=SETTLE)  # stopping a dead loop is harmless, and it stays dead
    assert loop.state is LoopState.DIED


def test_a_finished_owner_ends_the_loop_without_a_stop() -> None:
    hub = Hub()
    finished = threading.Event()
    passes: list[int] = []

    def run_once() -> None:
        passes.append(1)
        if len(passes) == 3:
            finished.set()

    loop, exits = make_loop(hub, run_once, next_wait=lambda: 0.0, finished=finished.is_set)
    loop.start()
    loop.join(SETTLE)
    assert loop.state is LoopState.STOPPED
    assert len(passes) == 3
    assert exits == ["exit"]


def test_a_stream_of_publishes_costs_one_pass_per_min_interval_and_none_is_lost() -> None:
    hub = Hub()
    starts: list[float] = []
    last_publish = threading.Event()
    after_last = threading.Event()

    def run_once() -> None:
        starts.append(time.monotonic())
        if last_publish.is_set():
            after_last.set()

    loop, _ = make_loop(hub, run_once, topics=lambda: ["work"], min_interval=0.05)
    loop.start()
    deadline = time.monotonic() + 0.5
    publishes = 0
    while time.monotonic() < deadline:
        hub.publish("work")
        publishes += 1
        time.sleep(0.001)
    last_publish.set()
    hub.publish("work")
    assert after_last.wait(SETTLE), "the last publish was not followed by a pass"
    loop.stop(timeout=SETTLE)
    gaps = [later - earlier for earlier, later in itertools.pairwise(starts)]
    assert min(gaps) >= 0.05
    assert len(starts) < publishes / 5
