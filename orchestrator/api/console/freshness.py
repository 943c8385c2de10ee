"""Polls that find nothing changed cost next to nothing: the console's live fragments carry an
ETag, and a poll that sends it back while no job has moved is answered 304 without reading or
rendering anything.

What a live fragment shows (jobs, their statuses, counts, attempts, children, dependencies)
changes only with a job event, so the newest event's id (``ChangeMark``, read from the primary
key at most every ``MARK_SECONDS`` for the whole process, whatever the number of browsers)
marks a version of every fragment. The ETag is a salted hash of that id, the fragment's URL and
the session's cookies (so another token or session never matches, and the tag tells nothing of
other projects' activity), and of the current ``FULL_SECONDS`` period: what changes without an
event (a job deleted by retention) is shown within that time.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import weakref

from fastapi import Request, Response

from orchestrator.api.console.session import CSRF_COOKIE, SESSION_COOKIE
from orchestrator.process import Services
from orchestrator.services import job_queries
from orchestrator.storage.db import Database

# Seconds a read of the newest event's id is used for (a change shows at most this much later).
MARK_SECONDS = 0.5
# Seconds after which a fragment is rendered again even if no event was written.
FULL_SECONDS = 60
# Cached by the browser but checked with the server at every poll, for this session only.
CACHING = {"Cache-Control": "private, no-cache", "Vary": "Cookie"}
_SALT = secrets.token_bytes(16)


class ChangeMark:
    """The newest job event's id, read from the database at most every ``MARK_SECONDS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._value = 0
        self._read_at = float("-inf")

    def value(self, services: Services) -> int:
        """The id, as read within the last ``MARK_SECONDS``."""
        now = time.monotonic()
        with self._lock:
            if now - self._read_at < MARK_SECONDS:
                return self._value
        with services.db.read() as session:
            value = job_queries.last_event_id(session)
        with self._lock:
            self._value, self._read_at = value, now
        return value


# One mark per database (a process may serve more than one: tests start several servers).
_MARKS: weakref.WeakKeyDictionary[Database, ChangeMark] = weakref.WeakKeyDictionary()
_MARKS_LOCK = threading.Lock()


def _mark(services: Services) -> ChangeMark:
    with _MARKS_LOCK:
        mark = _MARKS.get(services.db)
        if mark is None:
            mark = _MARKS[services.db] = ChangeMark()
        return mark


def etag(request: Request, services: Services) -> str:
    """The ETag of the fragment ``request`` asks for, as things are now."""
    digest = hashlib.sha256(_SALT)
    for part in (
        str(_mark(services).value(services)),
        str(int(time.time() // FULL_SECONDS)),
        request.url.path,
        request.url.query,
        request.cookies.get(SESSION_COOKIE, ""),
        request.cookies.get(CSRF_COOKIE, ""),
    ):
        digest.update(part.encode() + b"\0")
    return f'"{digest.hexdigest()[:32]}"'


def unchanged(request: Request, tag: str) -> Response | None:
    """304 if the browser already has the fragment of ``tag``; else None (render it)."""
    sent = request.headers.get("if-none-match", "")
    if tag in (value.strip() for value in sent.split(",")):
        return Response(status_code=304, headers={"ETag": tag, **CACHING})
    return None


def tagged(response: Response, tag: str) -> Response:
    """``response`` with its ETag, cacheable by this browser only, checked at every poll."""
    response.headers["ETag"] = tag
    response.headers.update(CACHING)
    return response
