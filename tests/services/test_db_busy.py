"""A SQLite database that stays locked past the busy timeout leaves the storage layer as
``DatabaseUnavailable`` (the request may be tried again), not as the driver's error, and is no
outage: the database answered, too late."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa

from orchestrator.errors import DatabaseUnavailable
from orchestrator.storage import db as storage_db
from orchestrator.storage.db import Database


def test_a_locked_sqlite_database_is_unavailable_not_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_db, "SQLITE_BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "locked.db"
    db = Database(f"sqlite:///{path}")
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        with db.transaction() as session:
            session.execute(sa.text("CREATE TABLE t (x INTEGER)"))
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(DatabaseUnavailable) as late, db.transaction() as session:
            session.execute(sa.text("INSERT INTO t VALUES (1)"))
        assert late.value.reason == "the database is locked"
        assert not late.value.outage
        assert not db.outage.active
        holder.execute("ROLLBACK")
        with db.transaction() as session:
            session.execute(sa.text("INSERT INTO t VALUES (1)"))
        with db.read() as session:
            assert session.execute(sa.text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        holder.close()
        db.dispose()
