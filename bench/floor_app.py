"""The web floor of ``submit_api.py``: a trivial FastAPI app that inserts one row per POST.

Run by ``submit_api.py`` as ``uvicorn floor_app:app`` (one worker, access log on, like
``orchestrator serve``), on the database named by ``FLOOR_DATABASE_URL`` (a SQLite file in WAL
mode, or PostgreSQL). Two endpoints, both sync (FastAPI's thread pool, like our submit route):

- ``POST /raw``: the row through the driver (``sqlite3`` / ``psycopg``): the floor.
- ``POST /orm``: the row through SQLModel (a session, an engine pool): what our stack pays
  before it does any work of its own.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI
from pydantic import BaseModel
from sqlmodel import Field, Session, SQLModel

TABLE = "bench_floor_rows"
DATABASE_URL = os.environ.get("FLOOR_DATABASE_URL", "sqlite:///floor.db")
IS_SQLITE = DATABASE_URL.startswith("sqlite")


class FloorRow(SQLModel, table=True):
    """One inserted row: about the size of a small job submission."""

    __tablename__ = TABLE

    id: str = Field(primary_key=True, max_length=36)
    body: dict[str, Any] = Field(sa_type=sa.JSON)  # type: ignore[call-overload]
    # Naive UTC, as orchestrator's UTCDateTime stores it.
    create_time: datetime = Field(sa_type=sa.DateTime)  # type: ignore[call-overload]


class Submission(BaseModel):
    """The request body: the same JSON the orchestrator's submit gets."""

    definition: str
    parameters: dict[str, str] = {}


def _engine() -> sa.Engine:
    if not IS_SQLITE:
        return sa.create_engine(DATABASE_URL, pool_size=20, max_overflow=20)
    engine = sa.create_engine(
        DATABASE_URL,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=20,
        max_overflow=20,
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    return engine


engine = _engine()
SQLModel.metadata.create_all(engine)
_local = threading.local()


_sqlite_lock = threading.Lock()
_sqlite_connection: sqlite3.Connection | None = None


def _raw_insert(sql: str, values: tuple[Any, ...]) -> None:
    """Run one autocommit INSERT with the driver.

    SQLite: one connection shared under a lock, the way to write it from one process (32
    connections would queue on SQLite's busy handler, which sleeps up to 100 ms a try).
    PostgreSQL: one connection per thread of the pool, opened on first use.
    """
    global _sqlite_connection
    if IS_SQLITE:
        with _sqlite_lock:
            if _sqlite_connection is None:
                path = sa.engine.make_url(DATABASE_URL).database
                _sqlite_connection = sqlite3.connect(
                    path, timeout=30, isolation_level=None, check_same_thread=False
                )
                _sqlite_connection.execute("PRAGMA journal_mode=WAL")
                _sqlite_connection.execute("PRAGMA synchronous=NORMAL")
            _sqlite_connection.execute(sql, values)
        return
    connection = getattr(_local, "connection", None)
    if connection is None:
        import psycopg

        url = DATABASE_URL.replace("postgresql+psycopg://", "postgresql://")
        connection = _local.connection = psycopg.connect(url, autocommit=True)
    connection.execute(sql, values)


app = FastAPI()


@app.post("/raw", status_code=201)
def insert_raw(body: Submission) -> dict[str, str]:
    """Insert the row with the driver, autocommit."""
    row_id = str(uuid.uuid4())
    now = datetime.now(UTC).replace(tzinfo=None)
    # sqlite3's datetime adapter is deprecated: SQLite gets the text SQLAlchemy would store.
    values = (row_id, json.dumps(body.model_dump()), now.isoformat(" ") if IS_SQLITE else now)
    marker = "?" if IS_SQLITE else "%s"
    _raw_insert(
        f"INSERT INTO {TABLE} (id, body, create_time) VALUES ({marker}, {marker}, {marker})",
        values,
    )
    return {"id": row_id}


@app.post("/orm", status_code=201)
def insert_orm(body: Submission) -> dict[str, str]:
    """Insert the row through a SQLModel session."""
    row = FloorRow(
        id=str(uuid.uuid4()),
        body=body.model_dump(),
        create_time=datetime.now(UTC).replace(tzinfo=None),
    )
    # Like orchestrator's sessions: the row stays readable after the commit.
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return {"id": row.id}
