"""The tokens behind this process's live streams: how many each holds, and whether each may
still read what it follows.

A stream holds a ``Lease`` from ``open`` until its response is over (``close``); a token
holding ``limit`` leases gets ``TooManyRequests`` (429) for the next. Counted per process.

While any lease is held one asyncio task re-reads the leases' tokens every ``CHECK_SECONDS``,
and at once when a token is revoked anywhere (the ``TOKENS`` topic, carried between servers by
the relay): one query for all of them, never one per stream or per line. A lease whose token
is revoked or gone, or no longer sees the stream's project, is ended; its stream closes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable

from orchestrator.errors import TooManyRequests
from orchestrator.services import tokens
from orchestrator.services.audit import Actor
from orchestrator.storage.db import Database
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import TOKENS

logger = logging.getLogger(__name__)

# Seconds between two re-checks of the streams' tokens (a revoke wakes the check at once).
CHECK_SECONDS = 2.0
# What a 429 tells the client to wait (seconds): a stream usually lasts longer than that.
RETRY_AFTER_SECONDS = 5


class Lease:
    """One open stream's claim on its token: ended when the token may no longer read."""

    def __init__(self, token_id: str, project: str) -> None:
        self.token_id = token_id
        self.project = project
        self.ended = False
        self._listeners: list[Callable[[], None]] = []

    def on_end(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call ``listener`` (no arguments, must not block) when the lease ends; the function
        that removes it again."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def end(self) -> None:
        """End the lease: its stream stops at its next step."""
        if self.ended:
            return
        self.ended = True
        for listener in list(self._listeners):
            listener()


class StreamGuard:
    """The per-token cap on live streams and the re-check of their tokens, for one process."""

    def __init__(self, db: Database, hub: Hub, limit: int) -> None:
        self.db = db
        self.hub = hub
        self.limit = limit
        self.checks = 0  # token checks done (each one query), for tests and benchmarks
        self._leases: defaultdict[str, set[Lease]] = defaultdict(set)
        self._watcher: asyncio.Task[None] | None = None

    def open(self, actor: Actor, project: str) -> Lease:
        """A lease for a new stream of ``actor`` on ``project``; 429 over the token's cap.

        Called on the event loop (by an async route): the count and the add are one step.
        """
        held = self._leases[actor.token_id]
        if len(held) >= self.limit:
            raise TooManyRequests(
                f"this token already holds {len(held)} live streams on this server, its limit "
                f"(ORCH_MAX_STREAMS_PER_TOKEN={self.limit}); close one and try again",
                field="token",
                retry_after=RETRY_AFTER_SECONDS,
            )
        lease = Lease(actor.token_id, project)
        held.add(lease)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        return lease

    def close(self, lease: Lease) -> None:
        """Give the lease's slot back (the stream is over); idempotent."""
        held = self._leases.get(lease.token_id)
        if held is None:
            return
        held.discard(lease)
        if not held:
            del self._leases[lease.token_id]
        if not self._leases and self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def held(self, token_id: str) -> int:
        """How many live streams ``token_id`` holds open on this process."""
        return len(self._leases.get(token_id, ()))

    async def _watch(self) -> None:
        while self._leases:
            seen = self.hub.version(TOKENS)
            await self.hub.wait_async(TOKENS, seen, CHECK_SECONDS)
            try:
                await self.check()
            except Exception:  # the next check tries again; the streams go on meanwhile
                logger.warning(
                    "the live streams' token check failed", extra={"action": "stream_check_failed"}
                )

    async def check(self) -> None:
        """Read every lease's token once and end the leases it no longer covers."""
        ids = list(self._leases)
        if not ids:
            return
        actors = await asyncio.to_thread(self._actors, ids)
        self.checks += 1
        for token_id in ids:
            actor = actors.get(token_id)
            for lease in list(self._leases.get(token_id, ())):
                if actor is None or not actor.can_see(lease.project):
                    lease.end()

    def _actors(self, ids: list[str]) -> dict[str, Actor]:
        with self.db.read() as session:
            return tokens.active(session, ids)
