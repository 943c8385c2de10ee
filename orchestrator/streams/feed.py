"""The fan-out: one reader per followed stream in the process, however many follow it.

The first follower of a stream (a job's logs, or its events) starts a ``Feed``: an asyncio task
that, each time the stream's topic is published (here, or on another server through the relay)
or every poll interval, reads the rows after its cursor once and hands them to every
follower's buffer. Followers cost memory, not database reads. The feed stops when its last
follower leaves, and ends its followers when the stream is over (the job finished and its last
rows were handed out).

Joining without a gap or a duplicate: a follower subscribes first, then catches up from the
database from its own position (``Last-Event-ID``, or the start); whatever the feed handed out
before the subscription is in the database by then, whatever comes after is in the buffer, and
the follower skips buffered rows at or below its position. The first follower catches up
before it starts the feed at its position. Row ids of one job grow in commit order (one writer
at a time appends a job's logs and events), which the cursor relies on, as it did before.

A slow follower (its client reads less than the job writes) never holds the others back: when
its buffer would pass ``BUFFER_ITEMS`` rows or ``BUFFER_BYTES``, it is detached, its buffer
dropped, and it catches up from the database by its position and joins again. Memory stays
bounded; only the slow follower pays the extra reads.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Callable, Hashable
from dataclasses import dataclass

from orchestrator.streams.guard import Lease
from orchestrator.wakeups.hub import Hub

logger = logging.getLogger(__name__)

# A follower's buffer: at most this many rows and bytes (rows are shared between followers, so
# followers at the same point hold the same bytes); past either it catches up from the database.
BUFFER_ITEMS = 512
BUFFER_BYTES = 1 << 20
# Followers woken in one turn of the event loop, and the pause after each such slice (see
# ``Feed._hand_out``).
HANDOUT_SLICE = 10
HANDOUT_PAUSE = 0.002


@dataclass(frozen=True, slots=True)
class Item:
    """One row as its followers send it: its id (the cursor), its attempt, its bytes, and for
    a log chunk the stream it came from (``job_logs.stream``)."""

    id: int
    attempt: int
    data: bytes
    stream: int | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """One read: the rows after a cursor, whether the page was full (more may wait), and whether
    the stream is over (nothing will follow these rows)."""

    items: list[Item]
    full: bool
    over: bool


# Reads the rows after a cursor (blocking: run in a thread).
Reader = Callable[[int], Page]


@dataclass(frozen=True)
class Source:
    """A stream that can be followed: its key among the feeds, its hub topic, and the feed's
    read (every row of the stream)."""

    key: Hashable
    topic: str
    read: Reader


class Subscription:
    """One follower's bounded buffer of a feed's rows."""

    def __init__(self) -> None:
        self.overflowed = False
        self.over = False
        self.caught_up = False  # the follower reads only this buffer now
        self._items: deque[Item] = deque()
        self._bytes = 0
        self._event = asyncio.Event()

    def offer(self, items: list[Item], size: int) -> None:
        """Buffer ``items`` (``size`` bytes in all), or drop the buffer if they do not fit."""
        if self.overflowed:
            return
        if len(self._items) + len(items) > BUFFER_ITEMS or self._bytes + size > BUFFER_BYTES:
            self.overflowed = True
            self._items.clear()
            self._bytes = 0
        else:
            self._items.extend(items)
            self._bytes += size
        self._event.set()

    def end(self) -> None:
        """Nothing more will come: the stream is over."""
        self.over = True
        self._event.set()

    def wake(self) -> None:
        """Wake the follower to look at something else (its lease ended)."""
        self._event.set()

    def take(self) -> list[Item]:
        """Every buffered row, emptying the buffer."""
        items = list(self._items)
        self._items.clear()
        self._bytes = 0
        self._event.clear()
        return items

    async def wait(self, timeout: float | None) -> bool:
        """Wait for rows, the end or a wake-up, up to ``timeout`` seconds; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._event.wait()
        except TimeoutError:
            return False
        return True


class Feed:
    """The one reader of a stream in this process, and its followers."""

    def __init__(
        self,
        hub: Hub,
        topic: str,
        read: Reader,
        cursor: int,
        poll: float,
        on_stop: Callable[[Feed], None],
    ) -> None:
        self.hub = hub
        self.topic = topic
        self.cursor = cursor
        self.reads = 0  # database reads, for tests and benchmarks
        self.followers: set[Subscription] = set()
        self._read = read
        self._poll = poll
        self._on_stop = on_stop
        self._task = asyncio.get_running_loop().create_task(self._run())

    def subscribe(self) -> Subscription:
        """A new follower's buffer: every row read from now on lands in it."""
        subscription = Subscription()
        self.followers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        """A follower left; the last one stops the feed."""
        self.followers.discard(subscription)
        if not self.followers:
            self._stop()

    def _stop(self) -> None:
        self._on_stop(self)
        self._task.cancel()

    async def _hand_out(self, items: list[Item]) -> None:
        """Buffer ``items`` for every follower, ``HANDOUT_SLICE`` followers at a time.

        The followers of a slice write to their sockets in the next turn of the event loop;
        the pause after each slice (``HANDOUT_PAUSE``) leaves the loop idle for as long, so a
        plain request's turns never queue behind more than one slice. Yielding alone was not
        enough: with 1,000 followers the loop stayed busy through the whole hand-out, and a
        GET's p99 doubled (``bench/streams.py``; 2 ms brought it to 1.3-1.4x). Up to ten
        followers get theirs at once; a thousand, over about 0.2 s. A follower subscribing
        meanwhile misses these rows here but reads them in its catch-up: they are committed,
        and past its position.
        """
        size = sum(len(item.data) for item in items)
        followers = list(self.followers)
        for count, subscription in enumerate(followers, start=1):
            subscription.offer(items, size)
            if count % HANDOUT_SLICE == 0 and count < len(followers):
                await asyncio.sleep(HANDOUT_PAUSE)

    async def _run(self) -> None:
        while self.followers:
            seen = self.hub.version(self.topic)
            try:
                page = await asyncio.to_thread(self._read, self.cursor)
            except Exception:  # tried again after the poll; the followers wait meanwhile
                logger.warning("a stream's read failed", extra={"action": "stream_read_failed"})
                await asyncio.sleep(self._poll)
                continue
            self.reads += 1
            if page.items:
                self.cursor = page.items[-1].id
                await self._hand_out(page.items)
            if page.over:
                for subscription in list(self.followers):
                    subscription.end()
                self._on_stop(self)
                return
            if not page.full:
                await self.hub.wait_async(self.topic, seen, self._poll)


class Feeds:
    """This process's feeds, by stream; ``follow`` is how a follower reads one."""

    def __init__(self, hub: Hub, poll: float) -> None:
        self.hub = hub
        self.poll = poll
        self.feeds: dict[Hashable, Feed] = {}

    def _start(self, source: Source, cursor: int) -> Feed:
        def stopped(feed: Feed) -> None:
            if self.feeds.get(source.key) is feed:
                del self.feeds[source.key]

        feed = Feed(self.hub, source.topic, source.read, cursor, self.poll, stopped)
        self.feeds[source.key] = feed
        return feed

    def followers(self, key: Hashable) -> int:
        """How many followers of the stream ``key`` read only its feed now (caught up, and not
        fallen behind)."""
        feed = self.feeds.get(key)
        if feed is None:
            return 0
        return sum(s.caught_up and not s.overflowed for s in feed.followers)

    async def follow(
        self,
        source: Source,
        after: int,
        lease: Lease,
        *,
        catch_up: Reader | None = None,
        keep: Callable[[Item], bool] | None = None,
        keepalive: float | None = None,
    ) -> AsyncGenerator[list[Item]]:
        """The stream's rows after ``after``, in order, each once, in batches, until the stream
        is over or ``lease`` ends; an empty batch after ``keepalive`` seconds without rows.

        A follower that wants only some rows (one attempt's) gives ``catch_up``, its own read
        from the database, and ``keep``, the same choice made of the feed's rows.
        """
        own_read = catch_up or source.read
        position = after
        while not lease.ended:
            feed = self.feeds.get(source.key)
            subscription = feed.subscribe() if feed is not None else None
            forget = lease.on_end(subscription.wake) if subscription is not None else None
            try:
                # Caught up from the database, then (if no feed is there yet) the feed starts
                # where the catch-up ended.
                while True:
                    page = await asyncio.to_thread(own_read, position)
                    if page.items:
                        position = page.items[-1].id
                        yield page.items
                    if page.over or lease.ended:
                        return
                    if not page.full:
                        break
                if feed is None:
                    if source.key in self.feeds:
                        continue  # another follower started it meanwhile: join that one
                    feed = self._start(source, position)
                    subscription = feed.subscribe()
                    forget = lease.on_end(subscription.wake)
                assert subscription is not None
                subscription.caught_up = True
                while not lease.ended:
                    items = subscription.take()
                    fresh = [item for item in items if item.id > position]
                    if fresh:
                        position = fresh[-1].id
                        kept = fresh if keep is None else [i for i in fresh if keep(i)]
                        if kept:
                            yield kept
                    if subscription.overflowed:
                        break  # behind: catch up from the database, then join again
                    if subscription.over and not items:
                        return
                    if not items and not await subscription.wait(keepalive):
                        yield []
            finally:
                if forget is not None:
                    forget()
                if feed is not None and subscription is not None:
                    feed.unsubscribe(subscription)
