"""Carries hub wake-ups between processes sharing one PostgreSQL database, over LISTEN/NOTIFY.

The relay owns two connections of its own: a sender that coalesces published topics into as few
``NOTIFY`` payloads as it can (so a publish never waits for a round trip), and a listener that
delivers other processes' topics to the local hub only. It decides nothing: a lost notification
costs a waiter one poll interval, never correctness, because the database stays the source of truth.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import threading
import uuid
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from orchestrator.rules.outages import outage_reason
from orchestrator.rules.retry import exponential_backoff
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import CANCEL, WORK

logger = logging.getLogger(__name__)

CHANNEL = "orchestrator"
# PostgreSQL refuses a payload of 8000 bytes or more; keep a margin.
PAYLOAD_LIMIT_BYTES = 7900
CONNECT_TIMEOUT_SECONDS = 5
RETRY_MIN_SECONDS = 0.2
RETRY_MAX_SECONDS = 10.0
START_TIMEOUT_SECONDS = 5.0


def conninfo(url: str) -> str:
    """The libpq connection string for a SQLAlchemy URL (``postgresql+psycopg://...``)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def backoff(failures: int) -> float:
    """Seconds to wait before the next connection attempt after ``failures`` failures in a row."""
    return exponential_backoff(failures, RETRY_MIN_SECONDS, RETRY_MAX_SECONDS)


def _dump(origin: str, topics: list[str]) -> str:
    # ASCII only (the default ensure_ascii), so a payload's length in characters is its bytes.
    return json.dumps({"o": origin, "t": topics}, separators=(",", ":"))


def encode(origin: str, topics: Iterable[str], limit: int = PAYLOAD_LIMIT_BYTES) -> list[str]:
    """The topics packed into as few JSON payloads of at most ``limit`` bytes as fit.

    A topic too long to fit any payload alone is dropped (with a warning): its waiters fall back
    to their poll.
    """
    empty = len(_dump(origin, []))
    payloads: list[str] = []
    batch: list[str] = []
    size = empty
    for topic in topics:
        item = len(json.dumps(topic))
        if empty + item > limit:
            logger.warning("topic too long to notify", extra={"action": "notify_topic_dropped"})
            continue
        separator = 1 if batch else 0
        if size + separator + item > limit:
            payloads.append(_dump(origin, batch))
            batch, size, separator = [], empty, 0
        batch.append(topic)
        size += separator + item
    if batch:
        payloads.append(_dump(origin, batch))
    return payloads


def decode(payload: str) -> tuple[str, list[str]]:
    """The origin and topics of a payload; ("", []) for one this module did not write."""
    try:
        message = json.loads(payload)
        origin, topics = message["o"], message["t"]
    except (ValueError, KeyError, TypeError):
        return "", []
    if not isinstance(origin, str) or not isinstance(topics, list):
        return "", []
    return origin, [t for t in topics if isinstance(t, str)]


class Outage(Protocol):
    """The process's record of a database outage (``storage.db.Outage``), which logs its start
    and its end once for every loop."""

    def seen(self, reason: str) -> None:
        """Note that the database did not answer, for ``reason``."""

    def over(self) -> None:
        """Note that the database answers."""


class _Reconnects:
    """One connection's failures in a row, for its backoff.

    A connection lost while idle is replaced quietly, as the pool replaces one the server
    closed; a connection that cannot be made is the database's outage, which the process's
    ``Outage`` logs once for every loop. Other errors are bugs, logged with their traceback.
    """

    def __init__(self, role: str, outage: Outage) -> None:
        self.role = role
        self.outage = outage
        self.failures = 0

    def failed(self, exc: psycopg.Error, *, connecting: bool) -> float:
        """Note a failure (``connecting``: of a new connection); the seconds to wait before
        trying again."""
        if not isinstance(exc, psycopg.OperationalError):
            logger.error(
                "notify %s failed; reconnecting",
                self.role,
                exc_info=exc,
                extra={"action": "notify_error", "role": self.role},
            )
        elif connecting:
            self.outage.seen(outage_reason(exc))
        else:
            logger.debug(
                "notify %s lost its database connection; reconnecting",
                self.role,
                extra={"action": "notify_disconnected", "role": self.role},
            )
        self.failures += 1
        return backoff(self.failures)

    def recovered(self) -> None:
        """Note a success: the database answers."""
        self.failures = 0
        self.outage.over()


class Relay:
    """Sends this process's hub publishes to the other processes and delivers theirs to the hub."""

    def __init__(self, hub: Hub, database_url: str, outage: Outage, channel: str = CHANNEL) -> None:
        self.hub = hub
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self._conninfo = conninfo(database_url)
        self._outage = outage
        self._stop = threading.Event()
        self._pending: dict[str, None] = {}  # ordered set of topics waiting to be sent
        self._cond = threading.Condition()
        self._listening = threading.Event()
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._threads: list[threading.Thread] = []

    # --- life cycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start sending and listening; wait (briefly) until the listener is subscribed."""
        self.hub.set_remote(self._enqueue)
        self._threads = [
            threading.Thread(target=self._send_loop, name="notify-sender", daemon=True),
            threading.Thread(target=self._listen_loop, name="notify-listener", daemon=True),
        ]
        for thread in self._threads:
            thread.start()
        # A runner started after this sees every later submit; if PostgreSQL is slow to answer,
        # starting anyway is fine: the listener's reconnect wakes WORK and CANCEL.
        if not self._listening.wait(START_TIMEOUT_SECONDS):
            logger.warning("notify listener not subscribed yet", extra={"action": "notify_slow"})

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (one try), stop both threads and close their connections."""
        self.hub.set_remote(None)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._wake_writer.send(b"x")
        for thread in self._threads:
            thread.join(timeout)
        self._wake_reader.close()
        self._wake_writer.close()

    def wait_listening(self, timeout: float) -> bool:
        """True once the listener is subscribed (again, after a reconnect), within ``timeout``."""
        return self._listening.wait(timeout)

    # --- sending ---------------------------------------------------------------------------

    def _enqueue(self, topics: Sequence[str]) -> None:
        with self._cond:
            for topic in topics:
                self._pending[topic] = None
            self._cond.notify()

    def _take(self) -> list[str]:
        """The pending topics (emptied), after waiting for some or for stop."""
        with self._cond:
            self._cond.wait_for(lambda: self._pending or self._stop.is_set())
            topics = list(self._pending)
            self._pending.clear()
            return topics

    def _send_loop(self) -> None:
        reconnects = _Reconnects("sender", self._outage)
        conn: psycopg.Connection[Any] | None = None
        statement = sql.SQL("SELECT pg_notify({}, %s)").format(sql.Literal(self.channel))
        while True:
            topics = self._take()
            if not topics and self._stop.is_set():
                break
            connecting = False
            try:
                if conn is None or conn.closed:
                    connecting = True
                    conn = self._connect()
                for payload in encode(self.origin, topics):
                    conn.execute(statement, (payload,))
                reconnects.recovered()
            except psycopg.Error as exc:
                self._close(conn)
                conn = None
                if self._stop.is_set():
                    break
                self._enqueue(topics)  # sent again once reconnected; duplicates are harmless
                self._stop.wait(reconnects.failed(exc, connecting=connecting))
        self._close(conn)

    # --- listening -------------------------------------------------------------------------

    def _listen_loop(self) -> None:
        reconnects = _Reconnects("listener", self._outage)
        subscribed_before = False
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            connecting = True
            try:
                conn = self._connect()
                conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                connecting = False
                reconnects.recovered()
                self._listening.set()
                if subscribed_before:
                    # Notifications sent while we were away are lost: let the waiters look again.
                    self.hub.publish_local(WORK, CANCEL)
                subscribed_before = True
                self._deliver(conn)
            except psycopg.Error as exc:
                self._listening.clear()
                if not self._stop.is_set():
                    subscribed_before = True
                    self._stop.wait(reconnects.failed(exc, connecting=connecting))
            finally:
                self._close(conn)

    def _deliver(self, conn: psycopg.Connection[Any]) -> None:
        """Hand each notification's topics to the local hub until stop or a connection error."""
        while not self._stop.is_set():
            # Notifications received during LISTEN wait in psycopg's backlog: drain before select.
            topics: dict[str, None] = {}
            for notify in conn.notifies(timeout=0):
                origin, sent = decode(notify.payload)
                if origin != self.origin:
                    topics.update(dict.fromkeys(sent))
            if topics:
                self.hub.publish_local(*topics)
            select.select([conn.fileno(), self._wake_reader.fileno()], [], [])

    # --- connections -----------------------------------------------------------------------

    def _connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=f"orchestrator-notify-{self.origin[:8]}",
            # TCP keepalives let the listener notice a peer that vanished without a word.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )

    @staticmethod
    def _close(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass  # closing a broken connection: nothing left to release
