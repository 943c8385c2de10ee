"""Wake-ups between the API, the runner and stream subscribers.

Each topic has a version counter. A waiter reads the version, checks the database, and then
waits for the version to move: a publish between the check and the wait is never lost. Waiting
always has a timeout, so the database stays the source of truth and a missed wake-up only costs
one poll interval. The hub itself is in-process; a remote sender (``wakeups.relay.Relay`` on
PostgreSQL) carries each publish to the other processes, which deliver it with ``publish_local``.

The hub remembers the last ``TOPIC_LIMIT`` topics published (a job's topic is published for
each event, so a long-lived process would otherwise keep one entry per job ever run). A
forgotten topic reads as version 0: a waiter that saw a higher version wakes once for nothing,
and the database check absorbs that.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Sequence

# How many topics' versions the hub keeps, most recently published first.
TOPIC_LIMIT = 10_000

RemoteSender = Callable[[Sequence[str]], None]


class Hub:
    """Topic versions with blocking and async waits, and an optional sender to other processes.

    A publish wakes only the waiters of its topics: each submit publishes, and a condition
    shared by every loop would wake each loop's thread for each submit, to look and sleep again.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._remote: RemoteSender | None = None
        self._versions: OrderedDict[str, int] = OrderedDict()
        self._waiters: dict[str, set[threading.Event]] = defaultdict(set)
        self._async_waiters: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Event]]] = (
            defaultdict(set)
        )

    def version(self, topic: str) -> int:
        """The topic's current version."""
        with self._lock:
            return self._versions.get(topic, 0)

    def set_remote(self, sender: RemoteSender | None) -> None:
        """Hand every later publish to ``sender`` too (it must not block); None stops that."""
        self._remote = sender

    def publish(self, *topics: str) -> None:
        """Wake everyone waiting on the topics, here and (through the remote sender) elsewhere."""
        self.publish_local(*topics)
        remote = self._remote
        if remote is not None:
            remote(topics)

    def publish_local(self, *topics: str) -> None:
        """Move each topic's version and wake this process's waiters; nothing is sent on."""
        woken: set[threading.Event] = set()
        waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        with self._lock:
            for topic in topics:
                self._versions[topic] = self._versions.get(topic, 0) + 1
                self._versions.move_to_end(topic)
                woken.update(self._waiters.get(topic, ()))
                waiters.extend(self._async_waiters.get(topic, ()))
            while len(self._versions) > TOPIC_LIMIT:
                self._versions.popitem(last=False)
        for event in woken:
            event.set()
        for loop, async_event in waiters:
            loop.call_soon_threadsafe(async_event.set)

    def wait(self, topics: dict[str, int], timeout: float) -> bool:
        """Block until any topic moves past the given version, or ``timeout``; True if moved."""
        event = threading.Event()
        with self._lock:
            if any(self._versions.get(t, 0) != v for t, v in topics.items()):
                return True
            for topic in topics:
                self._waiters[topic].add(event)
        try:
            return event.wait(timeout)
        finally:
            with self._lock:
                for topic in topics:
                    registered = self._waiters.get(topic)
                    if registered is not None:
                        registered.discard(event)
                        if not registered:
                            del self._waiters[topic]

    async def wait_async(self, topic: str, seen: int, timeout: float) -> bool:
        """Await the topic moving past ``seen``, or ``timeout``; True if it moved."""
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        waiter = (loop, event)
        with self._lock:
            if self._versions.get(topic, 0) != seen:
                return True
            self._async_waiters[topic].add(waiter)
        try:
            await asyncio.wait_for(event.wait(), timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._lock:
                self._async_waiters[topic].discard(waiter)
                if not self._async_waiters[topic]:
                    del self._async_waiters[topic]
