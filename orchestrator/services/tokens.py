"""API tokens and what they may do.

A token is 32 random bytes shown once; only its SHA-256 hash is stored (a slow hash buys
nothing for a random 256-bit secret). A token is either ``admin`` (every project, may create
projects and tokens) or bound to one project as ``write`` or ``read``.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlmodel import Session, col, select

from orchestrator.errors import Conflict, InvalidRequest, NotFound
from orchestrator.rules.project_caps import Capped, ProjectCaps
from orchestrator.rules.roles import Role
from orchestrator.services import audit, projects
from orchestrator.services.audit import SYSTEM, Actor
from orchestrator.storage.db import Database, after_commit, serialize
from orchestrator.storage.models import Token, utcnow
from orchestrator.wakeups.hub import Hub
from orchestrator.wakeups.topics import TOKENS

TOKEN_PREFIX = "orch_"
ADMIN_TOKEN_FILE = "admin-token"
# How long a verified token is taken on trust without reading it again (seconds): the longest
# a revoke made elsewhere takes to reach this process when the relay's notification is lost.
VERIFIED_SECONDS = 1.0
# Verified tokens kept at most (one entry is a hash and an actor); past it the cache restarts.
VERIFIED_ENTRIES = 4096


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create(
    session: Session,
    name: str,
    role: Role,
    project: str | None,
    actor: Actor = SYSTEM,
    *,
    caps: ProjectCaps,
) -> tuple[Token, str]:
    """A new token and its plain value (shown once, never stored). LimitReached when its
    project (for an admin token: the admin tokens) holds as many active tokens as ``caps``
    allow."""
    if role is Role.ADMIN and project is not None:
        raise InvalidRequest("project: an admin token covers every project", field="project")
    if role is not Role.ADMIN:
        if project is None:
            raise InvalidRequest(f"project: a {role} token needs a project", field="project")
        projects.get(session, project)
    # Counted under the lock, so two creates at the cap cannot both pass.
    serialize(session, f"cap:tokens:{project or ''}")
    active = session.exec(
        select(sa.func.count())
        .select_from(Token)
        .where(col(Token.project).is_(None) if project is None else Token.project == project)
        .where(col(Token.revoke_time).is_(None))
    ).one()
    holder = "the admin role" if project is None else f"project '{project}'"
    caps.check(Capped.TOKENS, active, holder)
    return _insert(session, name, role, project, actor)


def _insert(
    session: Session, name: str, role: Role, project: str | None, actor: Actor
) -> tuple[Token, str]:
    plain = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = Token(
        id=str(uuid.uuid4()),
        name=name,
        role=role,
        project=project,
        token_hash=_hash(plain),
        prefix=plain[: len(TOKEN_PREFIX) + 4],
    )
    session.add(token)
    session.flush()
    audit.record(session, actor, "token_created", f"token/{token.id}", project, {"role": role})
    return token, plain


def _authenticate(session: Session, digest: str) -> Actor | None:
    token = session.exec(
        select(Token).where(Token.token_hash == digest, col(Token.revoke_time).is_(None))
    ).first()
    return None if token is None else _actor(token)


@dataclass(frozen=True)
class _Verified:
    actor: Actor
    tokens_version: int  # the hub's TOKENS version when the token was read
    read_at: float  # time.monotonic()


class VerifiedTokens:
    """The process's cache of tokens it verified in the last ``VERIFIED_SECONDS``, so a burst
    of requests with one token reads it once, not once per request (on PostgreSQL, a round trip
    of a submit's six). Keyed by the token's hash; unknown and revoked tokens are never kept.

    A revoke empties it: here at its commit, on other servers when the relay delivers the
    ``TOKENS`` topic (milliseconds), and in any case within ``VERIFIED_SECONDS``.
    """

    def __init__(self, db: Database, hub: Hub) -> None:
        self._db = db
        self._hub = hub
        self._entries: dict[str, _Verified] = {}

    def recent(self, plain: str) -> Actor | None:
        """The actor of a token verified in the last ``VERIFIED_SECONDS`` and not revoked
        since; None when it was not (``actor`` then reads it). Reads no database, so an async
        caller may call it on the event loop."""
        kept = self._entries.get(_hash(plain))
        if (
            kept is not None
            and kept.tokens_version == self._hub.version(TOKENS)
            and time.monotonic() - kept.read_at < VERIFIED_SECONDS
        ):
            return kept.actor
        return None

    def actor(self, plain: str) -> Actor | None:
        """The actor of a token, or None when it is unknown or revoked."""
        if (recent := self.recent(plain)) is not None:
            return recent
        digest = _hash(plain)
        # Read before the database: a revoke committed during the read makes the entry stale.
        version = self._hub.version(TOKENS)
        now = time.monotonic()
        with self._db.read() as session:
            actor = _authenticate(session, digest)
        if actor is None:
            self._entries.pop(digest, None)
            return None
        if len(self._entries) >= VERIFIED_ENTRIES:
            self._entries.clear()
        self._entries[digest] = _Verified(actor, version, now)
        return actor


def _actor(token: Token) -> Actor:
    return Actor(token_id=token.id, name=token.name, role=Role(token.role), project=token.project)


def active(session: Session, token_ids: Iterable[str]) -> dict[str, Actor]:
    """The actors of those of ``token_ids`` that still work (not revoked), by id: one query, for
    the live streams' re-check of the tokens they were opened with."""
    ids = sorted(set(token_ids))
    if not ids:
        return {}
    rows = session.exec(
        select(Token).where(col(Token.id).in_(ids), col(Token.revoke_time).is_(None))
    ).all()
    return {token.id: _actor(token) for token in rows}


def list_all(session: Session) -> list[Token]:
    """Every token, newest first (revoked ones included, marked)."""
    return list(session.exec(select(Token).order_by(sa.desc(col(Token.create_time)))).all())


def revoke(session: Session, token_id: str, actor: Actor, hub: Hub | None = None) -> Token:
    """Revoke a token at once; NotFound names it; revoking twice is a Conflict.

    After commit, ``hub`` (here and, through the relay, on other servers) wakes the live
    streams' token check, so the token's open streams end now rather than at the next check.
    """
    token = session.get(Token, token_id)
    if token is None:
        raise NotFound(f"token '{token_id}' not found", field="token")
    if token.revoke_time is not None:
        raise Conflict(f"token '{token_id}' is already revoked", field="token")
    token.revoke_time = utcnow()
    session.add(token)
    audit.record(session, actor, "token_revoked", f"token/{token.id}", token.project)
    if hub is not None:
        after_commit(session, lambda: hub.publish(TOKENS))
    return token


def ensure_admin_token(session: Session, data_dir: Path) -> Path | None:
    """On a first start (no admin token yet): create one and write it to ``admin-token`` (0600).

    Returns the file's path when a token was created now.
    """
    exists = session.exec(
        select(Token.id).where(Token.role == Role.ADMIN, col(Token.revoke_time).is_(None))
    ).first()
    if exists is not None:
        return None
    # The first one: no cap to check.
    _, plain = _insert(session, "admin (first start)", Role.ADMIN, None, SYSTEM)
    path = data_dir / ADMIN_TOKEN_FILE
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.fchmod(fd, 0o600)  # exactly 0600: the umask can only take bits away from os.open's mode
    with os.fdopen(fd, "w") as handle:
        handle.write(plain + "\n")
    return path
