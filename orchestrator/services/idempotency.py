"""Idempotency keys: a create request sent again with its ``Idempotency-Key`` gets the answer the
first one got, and creates nothing (what a key may be: ``rules.idempotency``).

``keep`` is the last statement of the create's transaction: it writes the key with the answer,
so the key and what its request created are committed together, or neither is, at the cost of
one statement. Of concurrent requests with one key, each creates in its own transaction and the
first to keep the key commits; the others wait there (on PostgreSQL for the first one's row, on
SQLite for the one writer) until it commits, then roll their create back and answer as it did.
When the first is refused, nothing of it is kept and the next one keeps the key: only answers of
requests that created something are kept. A request refused because of what its own first
sending made (a job name now taken) is answered with that first answer too (``kept``).

A key belongs to one project and one route (``Scope``). Its answer is kept ``ttl`` seconds:
after that the key is free again (``keep`` takes the expired row over), and retention deletes
the row (``services.retention``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from orchestrator.errors import Conflict, IdempotencyKeyReused
from orchestrator.rules.idempotency import HEADER
from orchestrator.storage.driver_statements import DriverStatement
from orchestrator.storage.models import IdempotencyKey

_KEYS: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
# A keep that finds the key's row gone between its two statements (it expired, or retention
# deleted it) keeps it again; this many times at most.
KEEP_TRIES = 3


@dataclass(frozen=True)
class Scope:
    """Where a key is valid: one project, one route (``"jobs"``, ``"salad.jobs"``...)."""

    project: str
    route: str


@dataclass(frozen=True)
class Answer:
    """What a create request was answered: replayed byte for byte to the same request."""

    status_code: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class _Statements:
    """A dialect's statements, built once: building one costs more than running it."""

    # Insert the key's row with its answer, or take over its row when it expired: one
    # statement, so two requests can never both keep it. Returns the row's id when kept. Run
    # on the driver's cursor: through ``Connection.execute`` it cost twice the CPU, and a keyed
    # submit may cost at most 1.1x a plain one.
    keep: DriverStatement
    # The key's row as its first request left it, while its answer is kept.
    stored: sa.Executable


def _build(dialect: sa.Dialect) -> _Statements:
    insert = (postgresql.insert if dialect.name == "postgresql" else sqlite.insert)(_KEYS)
    time_type = _KEYS.c.create_time.type
    row = insert.values(
        project=sa.bindparam("project"),
        route=sa.bindparam("route"),
        key=sa.bindparam("key"),
        fingerprint=sa.bindparam("fingerprint"),
        status_code=sa.bindparam("status_code"),
        response_body=sa.bindparam("response_body"),
        response_headers=sa.bindparam("response_headers", type_=sa.JSON),
        create_time=sa.bindparam("create_time", type_=time_type),
    )
    keep = row.on_conflict_do_update(
        index_elements=["project", "route", "key"],
        set_={
            column: getattr(row.excluded, column)
            for column in (
                "fingerprint",
                "status_code",
                "response_body",
                "response_headers",
                "create_time",
            )
        },
        where=_KEYS.c.create_time < sa.bindparam("cutoff", type_=time_type),
    ).returning(_KEYS.c.id)
    stored = sa.select(
        _KEYS.c.fingerprint, _KEYS.c.status_code, _KEYS.c.response_body, _KEYS.c.response_headers
    ).where(
        _KEYS.c.project == sa.bindparam("project"),
        _KEYS.c.route == sa.bindparam("route"),
        _KEYS.c.key == sa.bindparam("key"),
        _KEYS.c.create_time >= sa.bindparam("cutoff", type_=time_type),
    )
    return _Statements(keep=DriverStatement(keep, dialect), stored=stored)


_BUILT: dict[str, _Statements] = {}


def _statements(session: Session) -> _Statements:
    dialect = session.get_bind().dialect
    built = _BUILT.get(dialect.name)
    if built is None:
        # Two threads may both build it: the same statements, one of them kept.
        built = _BUILT.setdefault(dialect.name, _build(dialect))
    return built


def keep(
    session: Session,
    scope: Scope,
    key: str,
    fingerprints: Sequence[str],
    answer: Answer,
    *,
    ttl: float,
    now: datetime,
) -> Answer | None:
    """Keep ``answer`` as ``key``'s, as the last statement of the create's transaction: None
    when this request is the key's first (or the key had expired); else the answer the key's
    first request got, which the caller sends after rolling its own create back.

    ``fingerprints`` are the request's (``SecretBox.digests``: the first is stored, any of them
    matches). ``IdempotencyKeyReused`` (422) when the key's first request was another one. The
    answer is what the API showed: it never holds a secret value.
    """
    connection = session.connection()
    statements = _statements(session)
    where = {"project": scope.project, "route": scope.route, "key": key}
    cutoff = now - timedelta(seconds=ttl)
    values = {
        **where,
        "fingerprint": fingerprints[0],
        "status_code": answer.status_code,
        "response_body": answer.body.decode(),
        "response_headers": answer.headers,
        "create_time": now,
        "cutoff": cutoff,
    }
    for _ in range(KEEP_TRIES):
        if statements.keep.first(connection, values) is not None:
            return None
        # The key is another request's, committed (the insert waits for an uncommitted one).
        first = _first_answer(session, where | {"cutoff": cutoff}, fingerprints)
        if first is not None:
            return first
        # Expired, or deleted by retention, since: keep it again.
    raise Conflict(f"{HEADER}: the key changed hands while it was kept; try again", field=HEADER)


def kept(
    session: Session,
    scope: Scope,
    key: str,
    fingerprints: Sequence[str],
    *,
    ttl: float,
    now: datetime,
) -> Answer | None:
    """The answer kept for ``key`` when its first request was this one; None when no answer is
    kept; ``IdempotencyKeyReused`` (422) when its first request was another one."""
    where = {"project": scope.project, "route": scope.route, "key": key}
    return _first_answer(session, where | {"cutoff": now - timedelta(seconds=ttl)}, fingerprints)


def _first_answer(
    session: Session, where: dict[str, object], fingerprints: Sequence[str]
) -> Answer | None:
    row = session.connection().execute(_statements(session).stored, where).first()
    if row is None:
        return None
    if row.fingerprint not in fingerprints:
        raise IdempotencyKeyReused(
            f"{HEADER}: this key was used with another request to this endpoint (another "
            "body or path) and its answer is kept for ORCH_IDEMPOTENCY_TTL; send a new key",
            field=HEADER,
        )
    return Answer(row.status_code, row.response_body.encode(), dict(row.response_headers))


def expired(now: datetime, ttl: float) -> sa.ColumnElement[bool]:
    """Keys whose answer is no longer kept (retention deletes their rows)."""
    return _KEYS.c.create_time < now - timedelta(seconds=ttl)
