"""Database engines and sessions for SQLite and PostgreSQL.

On SQLite every write transaction starts with ``BEGIN IMMEDIATE``: it takes the single writer
lock up front, so a transaction that reads and then writes never fails to upgrade its lock, and
a claim is atomic. Reads use a second engine with ordinary deferred transactions (WAL lets them
run beside the writer).

On PostgreSQL every statement is a network round trip, so sessions spend none they can avoid:
no ping when a connection is checked out (a dead one is told by its socket, see
``_closed_by_server``), and reads run in autocommit, without ``BEGIN`` and ``ROLLBACK``.

An outage of the database is logged by ``Outage``: one line when the first thread meets it,
one when a statement succeeds again, whichever of the process's loops and requests see it.

Driver errors stop here: a connection that fails, or a database that answers too late, leaves
``read``, ``transaction`` and the schema methods as ``DatabaseUnavailable``; any other
database error is a bug and goes on as it is.
"""

from __future__ import annotations

import fcntl
import logging
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.pool import QueuePool
from sqlmodel import Session

from orchestrator.errors import DatabaseUnavailable
from orchestrator.rules.outages import busy_reason, outage_reason
from orchestrator.storage import (
    migrations,
    models,  # noqa: F401  (registers the tables)
    private_files,
)

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_MS = 30_000
# A PostgreSQL connection older than this is replaced at its next checkout (seconds): one that a
# firewall or NAT dropped without a word (no FIN to see on its socket) lasts that long at most.
POSTGRES_RECYCLE_SECONDS = 300
AFTER_COMMIT = "orchestrator.after_commit"
# SQLite's ``auto_vacuum`` value for incremental vacuum, and the pages one release frees at
# most (4 KiB each: a few milliseconds of the writer's time).
INCREMENTAL = 2
FREE_PAGES_PER_RELEASE = 2048
# The shared lock (``Database.shared_lock``) held by the process migrating the database.
MIGRATION_LOCK = "orchestrator.schema_migration"


# What an outage's line says, by a fragment of the driver's message (lower case). The message
# itself is never logged: a statement's error may quote the statement and its data.
def is_connection_failure(error: BaseException) -> bool:
    """Whether ``error`` is the database being unreachable rather than a bug: a connection
    could not be made, or the one in use was lost (SQLite's ``OperationalError`` also stands
    for "no such table" and the like, so the class alone does not tell)."""
    if not isinstance(error, sa.exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    # No statement: the error came from opening a connection. (A failed commit has none
    # either; in our READ COMMITTED and BEGIN IMMEDIATE transactions an ``OperationalError``
    # there is a lost connection too.)
    return isinstance(error, sa.exc.OperationalError) and error.statement is None


def unavailable(error: BaseException) -> DatabaseUnavailable | None:
    """``error`` as the domain's ``DatabaseUnavailable`` when it is an outage or a database that
    answered too late; None when it is something else (a bug)."""
    if not isinstance(error, sa.exc.DBAPIError):
        return None
    driver_error = str(error.orig).strip()
    cause = driver_error.splitlines()[0] if driver_error else "no reason given"
    if is_connection_failure(error):
        return DatabaseUnavailable(outage_reason(error), outage=True, cause=cause)
    busy = busy_reason(error) if isinstance(error, sa.exc.OperationalError) else None
    if busy is not None:
        return DatabaseUnavailable(busy, outage=False, cause=cause)
    return None


@contextmanager
def _translated() -> Iterator[None]:
    """Raise an outage or a late answer met inside as ``DatabaseUnavailable``."""
    try:
        yield
    except sa.exc.DBAPIError as exc:
        translated = unavailable(exc)
        if translated is None:
            raise
        raise translated from exc


class Outage:
    """Whether the database answers, as this process last found it; logs one line when an
    outage starts and one when it ends, not one per failed pass of every loop. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: float | None = None  # time.monotonic() of its start

    @property
    def active(self) -> bool:
        """True from a connection failure until the next statement that succeeds."""
        return self._since is not None

    def seen(self, reason: str) -> None:
        """A connection failed: log the outage's start, unless it is already under way."""
        with self._lock:
            if self._since is not None:
                return
            self._since = time.monotonic()
            # Logged under the lock, so the end of an outage is never logged before its start.
            logger.warning(
                "database unavailable: %s",
                reason,
                extra={"action": "database_unavailable", "reason": reason},
            )

    def over(self) -> None:
        """A statement succeeded: log the end of the outage, if one was under way."""
        if self._since is None:  # every statement passes here: no lock in the usual case
            return
        with self._lock:
            if self._since is None:
                return
            seconds = round(time.monotonic() - self._since, 1)
            self._since = None
            logger.info(
                "database available again after %.1f s",
                seconds,
                extra={"action": "database_available", "seconds": seconds},
            )


# One outage per database for the whole process: its Database objects and the notify relay
# (which has connections of its own) meet the same outage, and it is logged once.
_outages: dict[str, Outage] = {}
_outages_guard = threading.Lock()


def outage_of(url: str) -> Outage:
    """The process's ``Outage`` of the database at ``url``."""
    parsed = sa.engine.make_url(url)
    key = parsed.set(drivername=parsed.get_backend_name()).render_as_string()
    with _outages_guard:
        return _outages.setdefault(key, Outage())


def _sqlite_engine(url: str, *, immediate: bool, checkpoints: bool = True) -> Engine:
    engine = sa.create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=20 if checkpoints else 2,
        max_overflow=20 if checkpoints else 2,
        # A bug's traceback still names the statement, but not the values (job data) it bound.
        hide_parameters=True,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin event, not the driver, decide how transactions start.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        # Takes effect only on a database that has no table yet: a new one gives the pages
        # retention frees back to the file system (``release_free_pages``).
        cursor.execute("PRAGMA auto_vacuum=INCREMENTAL")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        if not checkpoints:
            # Its commits leave the WAL as it is: ``Database.checkpoint`` copies it later.
            cursor.execute("PRAGMA wal_autocheckpoint=0")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _closed_by_server(dbapi_connection: Any) -> bool:
    """Whether PostgreSQL has closed (or is closing) this idle pooled connection.

    An idle connection receives nothing unasked (the pool's connections never LISTEN), so a
    readable socket means the server sent its last words: the FATAL it sends when it shuts down,
    restarts, ends an idle session or is told to terminate the backend, then the end of the
    stream. Checked with a poll of the socket, no round trip.
    """
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def _postgres_engine(url: str, outage: Outage) -> Engine:
    """The PostgreSQL engine; a connection the server has closed is never handed out.

    Not ``pool_pre_ping``: its ``SELECT 1`` was a round trip on every checkout, and a request
    checks out more than once. Nor a retry after the first statement fails: a transaction is a
    ``with`` block whose body cannot be run again. Instead the checkout looks at the socket
    (``_closed_by_server``), which catches what a ping catches (a restart, a terminated backend,
    an idle timeout) at no cost; raising ``DisconnectionError`` there is the pool's documented
    way to drop the connection and hand out a fresh one. Like a ping, it leaves the moment
    between checkout and first statement: a server that dies then fails that request.
    """
    engine = sa.create_engine(
        url,
        pool_size=40,
        max_overflow=10,
        pool_recycle=POSTGRES_RECYCLE_SECONDS,
        # A bug's traceback still names the statement, but not the values (job data) it bound.
        hide_parameters=True,
    )

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if _closed_by_server(dbapi_connection):
            # During an outage every pooled connection is found closed: its line said so.
            if not outage.active:
                logger.info(
                    "a pooled database connection was closed by the server: reconnecting",
                    extra={"action": "database_reconnected"},
                )
            raise sa.exc.DisconnectionError("closed by the server")

    return engine


# One lock per SQLite file, shared by every Database of this process that opens it.
_sqlite_writer_locks: dict[str, threading.RLock] = {}
_sqlite_writer_locks_guard = threading.Lock()


def _sqlite_writer_lock(url: str) -> threading.RLock:
    database = sa.engine.make_url(url).database or ":memory:"
    key = database if database == ":memory:" else str(Path(database).resolve())
    with _sqlite_writer_locks_guard:
        return _sqlite_writer_locks.setdefault(key, threading.RLock())


class Database:
    """Owns the engines; hands out read sessions and write transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.dialect = sa.engine.make_url(url).get_backend_name()
        self.outage = outage_of(url)
        self._memory_lock = threading.Lock()
        if self.dialect == "sqlite":
            database = private_files.sqlite_file(url)
            if database is not None:
                private_files.prepare_sqlite_file(database)
            self.write_engine = _sqlite_engine(url, immediate=True)
            self.read_engine = _sqlite_engine(url, immediate=False)
            # Bulk transactions (retention's batches): no checkpoint at their commit.
            self._bulk_engine: Engine | None = _sqlite_engine(
                url, immediate=True, checkpoints=False
            )
            self._writer_lock: threading.RLock | None = _sqlite_writer_lock(url)
        else:
            self.write_engine = _postgres_engine(url, self.outage)
            # The same pool, in autocommit: a read is its statements alone. Under PostgreSQL's
            # READ COMMITTED each statement takes its own snapshot inside a transaction too,
            # so a read sees exactly what it saw in one.
            self.read_engine = self.write_engine.execution_options(isolation_level="AUTOCOMMIT")
            self._bulk_engine = None
            self._writer_lock = None
        # Every statement of the process passes here, whoever runs it: the first connection
        # failure starts the outage, the first success after it ends it. (On PostgreSQL the
        # read engine is the write engine with options: it shares these listeners.)
        engines = [self.write_engine]
        if self.read_engine.pool is not self.write_engine.pool:
            engines.append(self.read_engine)
        if self._bulk_engine is not None:
            engines.append(self._bulk_engine)
        for engine in engines:
            event.listen(engine, "handle_error", self._on_error)
            event.listen(engine, "after_cursor_execute", self._on_success)

    @property
    def is_postgres(self) -> bool:
        """True when the database is PostgreSQL."""
        return self.dialect == "postgresql"

    def _on_error(self, context: sa.engine.ExceptionContext) -> None:
        # Every failed statement of the process passes here: an unreachable database starts
        # (or continues) the outage, logged once.
        error = context.sqlalchemy_exception
        if error is not None and is_connection_failure(error):
            self.outage.seen(outage_reason(error))

    def _on_success(self, *_args: Any) -> None:
        self.outage.over()

    def upgrade_schema(self) -> migrations.Upgrade:
        """Migrate the schema to the newest revision, one process at a time; what it did.

        A database created before migrations existed is stamped at the baseline first.
        """
        with _translated():
            return self._upgrade_schema()

    def _upgrade_schema(self) -> migrations.Upgrade:
        with self.read_engine.connect() as connection:
            revision = migrations.is_current(connection)
        if revision is not None:
            return migrations.Upgrade(before=revision, after=revision)
        with self._migration_connection() as connection:
            result = migrations.upgrade(connection)
        if result.stamped:
            logger.info(
                "schema created before migrations: stamped at revision %s",
                migrations.BASELINE,
                extra={"action": "schema_stamped", "revision": migrations.BASELINE},
            )
        for revision in result.applied:
            logger.info(
                "applied schema revision %s",
                revision,
                extra={"action": "schema_migrated", "revision": revision},
            )
        return result

    def schema_revision(self) -> str | None:
        """The schema's revision (None: empty, or created before migrations)."""
        with _translated(), self.read_engine.connect() as connection:
            return migrations.current(connection)

    @contextmanager
    def _migration_connection(self) -> Iterator[sa.Connection]:
        """A connection no other process migrates through until it is returned."""
        # Alembic checks the revision before its write transaction starts; the lock makes
        # check-and-migrate one step across processes.
        with self.shared_lock(MIGRATION_LOCK), self.write_engine.connect() as connection:
            yield connection

    @contextmanager
    def shared_lock(self, key: str) -> Iterator[None]:
        """Held by one thread of all the processes sharing this database at a time, for steps
        they must not take together (migrating it; making a project's Docker network).

        PostgreSQL: a session advisory lock on ``key``, on a connection of its own (it holds
        across commits, and ends with the session if the process dies). SQLite: a file lock
        beside the database (every process sharing a SQLite file is on its host), one for every
        key: these steps are rare and short. A database in memory: a lock of this process.
        """
        if self.is_postgres:
            with _translated(), self.write_engine.connect() as connection:
                lock = sa.text("SELECT pg_advisory_lock(hashtext(:key))")
                connection.execute(lock, {"key": key})
                connection.commit()
                try:
                    yield
                finally:
                    try:
                        unlock = sa.text("SELECT pg_advisory_unlock(hashtext(:key))")
                        connection.execute(unlock, {"key": key})
                        connection.commit()
                    except sa.exc.DBAPIError:
                        # The session is gone or going, and its locks with it.
                        connection.invalidate()
            return
        database = private_files.sqlite_file(self.url)
        if database is None:
            with self._memory_lock:
                yield
            return
        lock_path = Path(f"{database}{private_files.LOCK_FILE_SUFFIX}")
        private_files.create_private_file(lock_path)  # empty, but nothing in the data dir is 0644
        # flock conflicts between open files, so between threads of one process too.
        with lock_path.open("a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    @contextmanager
    def transaction(self, *, bulk: bool = False) -> Iterator[Session]:
        """A write transaction: committed on success, rolled back on any exception.

        ``bulk`` (retention's batches, which write thousands of pages): on SQLite its commit
        leaves the copy of those pages from the WAL into the database file to ``checkpoint``,
        which the caller runs once the writer is free. Otherwise the checkpoint would run at
        the commit, holding this process's writer turn for as long again as the transaction.
        """
        engine = self._bulk_engine if bulk and self._bulk_engine is not None else self.write_engine
        with _translated(), self.writer_turn():
            with Session(engine, expire_on_commit=False) as session:
                with session.begin():
                    yield session
                callbacks = session.info.pop(AFTER_COMMIT, [])
        for callback in callbacks:
            callback()

    @contextmanager
    def writer_turn(self) -> Iterator[None]:
        """On SQLite, this process's writers take turns on a lock before ``BEGIN IMMEDIATE``.

        SQLite admits one writer; the others wait in its busy handler, which sleeps up to
        100 ms between tries, so under load the write lock sits free while every writer
        sleeps. Queued on a thread lock, the next writer starts the moment the last commits.
        Writers in other processes still meet at the busy handler. Reentrant, so a nested
        transaction fails as before (SQLite's busy timeout) instead of hanging. PostgreSQL
        needs no turn.
        """
        if self._writer_lock is None:
            yield
            return
        with self._writer_lock:
            yield

    def release_free_pages(self, limit: int = FREE_PAGES_PER_RELEASE) -> int:
        """On a SQLite database made with incremental vacuum, give up to ``limit`` free pages
        (rows deleted leave them) back to the file system, so the file shrinks; how many went.
        0 on PostgreSQL (autovacuum's work) and on SQLite files made before (their free pages
        are reused by new rows, and the file keeps its size)."""
        if self.is_postgres:
            return 0
        # Outside SQLAlchemy's transaction: only the driver's script call steps the statement
        # to its end (a plain execute frees one page), and it runs in autocommit.
        with _translated(), self.writer_turn():
            # The bulk engine's connection: its commit leaves the checkpoint to ``checkpoint``.
            pooled = (self._bulk_engine or self.write_engine).raw_connection()
            try:
                driver = cast(sqlite3.Connection, pooled.driver_connection)
                if driver.execute("PRAGMA auto_vacuum").fetchone()[0] != INCREMENTAL:
                    return 0
                free = int(driver.execute("PRAGMA freelist_count").fetchone()[0])
                if free:
                    driver.executescript(f"PRAGMA incremental_vacuum({int(limit)});")
                return min(free, limit)
            finally:
                pooled.close()

    def checkpoint(self) -> None:
        """On SQLite, copy the pages the WAL holds into the database file (after a ``bulk``
        transaction). Passive: it waits for no one, and writers go on meanwhile (in this
        process too: it runs outside the writer turn). Nothing on PostgreSQL."""
        if self._bulk_engine is None:
            return
        with _translated():
            pooled = self._bulk_engine.raw_connection()
            try:
                driver = cast(sqlite3.Connection, pooled.driver_connection)
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            finally:
                pooled.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session; its objects stay usable after it closes."""
        with _translated(), Session(self.read_engine, expire_on_commit=False) as session:
            yield session

    def pool_use(self) -> list[tuple[str, int, int]]:
        """Each connection pool of this process: its name (``write``, ``read``, ``bulk``), the
        connections it keeps, and those lent out now."""
        engines = {"write": self.write_engine}
        if self.read_engine.pool is not self.write_engine.pool:
            engines["read"] = self.read_engine
        if self._bulk_engine is not None:
            engines["bulk"] = self._bulk_engine
        used = []
        for name, engine in engines.items():
            pool = engine.pool
            if isinstance(pool, QueuePool):
                used.append((name, pool.size(), pool.checkedout()))
        return used

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.write_engine.dispose()
        if self.read_engine.pool is not self.write_engine.pool:
            self.read_engine.dispose()
        if self._bulk_engine is not None:
            self._bulk_engine.dispose()


def serialize(session: Session, key: str) -> None:
    """Serialize write transactions that share ``key`` until this transaction ends.

    SQLite already runs one writer at a time; PostgreSQL takes a transaction advisory lock.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:key))"), {"key": key})


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the transaction commits (never if it rolls back)."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)
