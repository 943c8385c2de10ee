"""Idempotency keys: a create request sent again with its ``Idempotency-Key`` gets the answer the
first one got, and creates nothing (what a key may be: ``rules.idempotency``).

``claim`` is the first statement of the create's transaction and ``record`` writes the answer
before that transaction commits: the key and what its request created are committed together,
or neither is. Of concurrent requests with one key, one creates; the others wait at the claim
(on PostgreSQL for the first one's row lock, on SQLite for the one writer) until it commits,
then answer as it did. When the first is refused, its transaction (and its claim) rolls back
and the next claims the key: only answers of requests that created something are kept.

A key belongs to one project and one route (``Scope``). Its answer is kept ``ttl`` seconds:
after that the key is free again (a claim takes the expired row over), and retention deletes
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
from orchestrator.storage.models import IdempotencyKey

_KEYS: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
# A claim that finds the key's row gone between its two statements (retention deleted it)
# claims again; this many times at most.
CLAIM_TRIES = 3


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

    # Insert the key's row, or take over its row when it expired: one statement, so two
    # requests can never both take it. Returns the row's id when this request has the key.
    claim: sa.Executable
    # The key's row as its first request left it.
    stored: sa.Executable
    # The answer, into the row claimed.
    record: sa.Executable


def _build(dialect: str) -> _Statements:
    insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_KEYS)
    claim = insert.values(
        project=sa.bindparam("project"),
        route=sa.bindparam("route"),
        key=sa.bindparam("key"),
        fingerprint=sa.bindparam("fingerprint"),
        response_headers=sa.bindparam("response_headers", type_=sa.JSON),
        create_time=sa.bindparam("create_time", type_=_KEYS.c.create_time.type),
    )
    upsert = claim.on_conflict_do_update(
        index_elements=["project", "route", "key"],
        set_={
            "fingerprint": claim.excluded.fingerprint,
            "status_code": None,
            "response_body": None,
            "response_headers": claim.excluded.response_headers,
            "create_time": claim.excluded.create_time,
        },
        where=_KEYS.c.create_time < sa.bindparam("cutoff", type_=_KEYS.c.create_time.type),
    ).returning(_KEYS.c.id)
    scope = sa.and_(
        _KEYS.c.project == sa.bindparam("project"),
        _KEYS.c.route == sa.bindparam("route"),
        _KEYS.c.key == sa.bindparam("key"),
    )
    stored = sa.select(
        _KEYS.c.fingerprint, _KEYS.c.status_code, _KEYS.c.response_body, _KEYS.c.response_headers
    ).where(scope)
    record = (
        sa.update(_KEYS)
        .where(_KEYS.c.id == sa.bindparam("claimed"))
        .values(
            status_code=sa.bindparam("status_code"),
            response_body=sa.bindparam("response_body"),
            response_headers=sa.bindparam("answer_headers", type_=sa.JSON),
        )
    )
    return _Statements(claim=upsert, stored=stored, record=record)


_BUILT: dict[str, _Statements] = {}


def _statements(session: Session) -> _Statements:
    dialect = session.get_bind().dialect.name
    built = _BUILT.get(dialect)
    if built is None:
        # Two threads may both build it: the same statements, one of them kept.
        built = _BUILT.setdefault(dialect, _build(dialect))
    return built


def claim(
    session: Session,
    scope: Scope,
    key: str,
    fingerprints: Sequence[str],
    *,
    ttl: float,
    now: datetime,
) -> int | Answer:
    """Claim ``key`` for this request, in its create's transaction: the key row's id when the
    request is the key's first (or the key had expired), to ``record`` the answer in; else the
    answer the key's first request got.

    ``fingerprints`` are the request's (``SecretBox.digests``: the first is stored, any of them
    matches). ``IdempotencyKeyReused`` (422) when the key's first request was another one.
    """
    connection = session.connection()
    statements = _statements(session)
    where = {"project": scope.project, "route": scope.route, "key": key}
    values = {
        **where,
        "fingerprint": fingerprints[0],
        "response_headers": {},
        "create_time": now,
        "cutoff": now - timedelta(seconds=ttl),
    }
    for _ in range(CLAIM_TRIES):
        claimed = connection.execute(statements.claim, values).scalar_one_or_none()
        if claimed is not None:
            return int(claimed)
        # The key is another request's, committed (a claim waits for an uncommitted one).
        row = connection.execute(statements.stored, where).first()
        if row is None:
            continue  # deleted since by retention: claim it again
        if row.fingerprint not in fingerprints:
            raise IdempotencyKeyReused(
                f"{HEADER}: this key was used with another request to this endpoint (another "
                "body or path) and its answer is kept for ORCH_IDEMPOTENCY_TTL; send a new key",
                field=HEADER,
            )
        assert row.status_code is not None and row.response_body is not None
        return Answer(row.status_code, row.response_body.encode(), dict(row.response_headers))
    raise Conflict(f"{HEADER}: the key changed hands while it was claimed; try again", field=HEADER)


def record(session: Session, claimed: int, answer: Answer) -> None:
    """Keep the answer of the request that claimed the key (row ``claimed``), in the claim's
    transaction. The answer is what the API showed: it never holds a secret value."""
    session.connection().execute(
        _statements(session).record,
        {
            "claimed": claimed,
            "status_code": answer.status_code,
            "response_body": answer.body.decode(),
            "answer_headers": answer.headers,
        },
    )


def expired(now: datetime, ttl: float) -> sa.ColumnElement[bool]:
    """Keys whose answer is no longer kept (retention deletes their rows)."""
    return _KEYS.c.create_time < now - timedelta(seconds=ttl)
