"""A job's live streams, as followers read them: its log (text) and its events (server-sent
events), each through the process's one feed of that job (``streams.feed``), each holding a
lease on its token (``streams.guard``)."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator
from functools import partial

from orchestrator.config import Settings
from orchestrator.errors import NotFound
from orchestrator.schemas.jobs import JobEventPublic
from orchestrator.services import job_queries
from orchestrator.services.audit import Actor
from orchestrator.storage.db import Database
from orchestrator.streams.feed import Feeds, Item, Page, Source
from orchestrator.streams.guard import Lease, StreamGuard
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import job_topic

# Rows one read takes at most; a full page is read on at once.
PAGE_ROWS = 1000
# Seconds without an event after which the event stream sends a comment, so proxies and
# clients see the connection is alive.
KEEPALIVE_SECONDS = 15.0


def sse(event: JobEventPublic) -> str:
    """One job event as a server-sent event: its id (the ``Last-Event-ID`` to resume after),
    its type and the event as JSON."""
    data = json.dumps(event.model_dump(mode="json"))
    return f"id: {event.id}\nevent: {event.type}\ndata: {data}\n\n"


class JobStreams:
    """This process's job log and event streams: one reader per job and kind, a capped number
    of streams per token, each ended when its token no longer may read the job."""

    def __init__(self, settings: Settings, db: Database, hub: Hub) -> None:
        self.db = db
        self.feeds = Feeds(hub, settings.poll_interval)
        self.guard = StreamGuard(db, hub, settings.max_streams_per_token)

    # --- reads (blocking; the feeds run them in threads) ---------------------------------------

    def _logs(self, project: str, job_id: str, attempt: int | None, after: int) -> Page:
        # Status first: a job's logs are committed before its terminal status, so a terminal
        # status read here means the logs read next are complete.
        with self.db.read() as session:
            try:
                status = job_queries.get(session, project, job_id).status
            except NotFound:  # deleted meanwhile: nothing more will come
                return Page([], full=False, over=True)
            rows = job_queries.logs(session, job_id, after, attempt, limit=PAGE_ROWS)
        items = [Item(row.id or 0, row.attempt, row.text.encode(), row.stream) for row in rows]
        full = len(items) == PAGE_ROWS
        return Page(items, full=full, over=status.terminal and not full)

    def _events(self, project: str, job_id: str, after: int) -> Page:
        with self.db.read() as session:
            try:
                status = job_queries.get(session, project, job_id).status
            except NotFound:
                return Page([], full=False, over=True)
            rows = job_queries.events(session, job_id, after, limit=PAGE_ROWS)
        items = [
            Item(row.id or 0, row.attempt, sse(JobEventPublic.from_row(row)).encode())
            for row in rows
        ]
        full = len(items) == PAGE_ROWS
        return Page(items, full=full, over=status.terminal and not full)

    # --- followers ---------------------------------------------------------------------------

    def open(self, actor: Actor, project: str) -> Lease:
        """A lease for a new stream of ``actor`` on ``project``; 429 over the token's cap."""
        return self.guard.open(actor, project)

    def close(self, lease: Lease) -> None:
        """The stream is over: its token's slot is free again."""
        self.guard.close(lease)

    def followers(self, kind: str, project: str, job_id: str) -> int:
        """How many of this process's followers of the job's ``logs`` or ``events`` read its
        one feed now."""
        return self.feeds.followers((kind, project, job_id))

    # --- followers' rows ---------------------------------------------------------------------

    def logs(
        self, project: str, job_id: str, attempt: int | None, lease: Lease, after: int = 0
    ) -> AsyncGenerator[list[Item]]:
        """The job's log after the chunk ``after`` (from the start by default; one attempt's,
        or all), until the job ends or the lease does."""
        source = Source(
            ("logs", project, job_id), job_topic(job_id), partial(self._logs, project, job_id, None)
        )
        if attempt is None:
            return self.feeds.follow(source, after, lease)
        return self.feeds.follow(
            source,
            after,
            lease,
            catch_up=partial(self._logs, project, job_id, attempt),
            keep=lambda item: item.attempt == attempt,
        )

    def events(
        self, project: str, job_id: str, after: int, lease: Lease
    ) -> AsyncGenerator[list[Item]]:
        """The job's events after ``after`` as server-sent events, until the job ends or the
        lease does; an empty batch every ``KEEPALIVE_SECONDS`` without one."""
        source = Source(
            ("events", project, job_id), job_topic(job_id), partial(self._events, project, job_id)
        )
        return self.feeds.follow(source, after, lease, keepalive=KEEPALIVE_SECONDS)
