"""Key rotation: re-encrypt every stored ciphertext under the key ring's first key, then retire
the old keys.

``CIPHERTEXT_COLUMNS`` is the one list of the columns that hold ciphertext: a new encrypted
column is added there and nowhere else. Works directly on the database beside running
servers: each row is re-encrypted in its own short transaction, so nobody waits long.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from orchestrator.errors import Conflict, OrchestratorError
from orchestrator.storage.db import Database
from orchestrator.storage.models import ApiSecret, Job, Project, Schedule
from orchestrator.storage.secret_box import (
    SecretBox,
    generate_key,
    key_file_lock,
    parse_setting,
    read_key_file,
    write_key_file,
)

CIPHERTEXT_COLUMNS: tuple[sa.Column[Any], ...] = (
    sa.inspect(Job).columns["secret_env_ciphertext"],
    sa.inspect(Job).columns["webhook_auth_ciphertext"],
    sa.inspect(Project).columns["webhook_secret_ciphertext"],
    sa.inspect(Project).columns["previous_webhook_secret_ciphertext"],
    sa.inspect(Schedule).columns["secret_ciphertext"],
    sa.inspect(Schedule).columns["webhook_auth_ciphertext"],
    sa.inspect(ApiSecret).columns["secret_ciphertext"],
    sa.inspect(ApiSecret).columns["previous_secret_ciphertext"],
)
BATCH_SIZE = 200  # rows read per query; each is then re-encrypted in its own transaction


@dataclass
class Tally:
    """What one column holds: rows under the primary key, under a retired key, under none."""

    column: str
    current: int = 0
    retired: int = 0
    unreadable: int = 0


def check_schema(db: Database) -> None:
    """Refuse a database without our tables: most likely the wrong ``ORCH_DATABASE_URL``."""
    present = sa.inspect(db.write_engine)
    for table in {column.table.name for column in CIPHERTEXT_COLUMNS}:
        if not present.has_table(table):
            raise OrchestratorError(
                f"the database has no '{table}' table: are ORCH_DATABASE_URL and ORCH_DATA_DIR "
                "the server's?"
            )


def _rows(db: Database, column: sa.Column[Any], batch_size: int) -> Iterator[tuple[Any, str]]:
    """(primary key, ciphertext) of every row with a value in ``column``, a batch per read."""
    (key,) = column.table.primary_key.columns
    last = None
    while True:
        query = sa.select(key, column).where(column.is_not(None)).order_by(key).limit(batch_size)
        if last is not None:
            query = query.where(key > last)
        with db.read() as session:
            batch = [(row_key, ciphertext) for row_key, ciphertext in session.execute(query)]
        yield from batch
        if len(batch) < batch_size:
            return
        last = batch[-1][0]


def _reencrypt_row(
    db: Database, box: SecretBox, column: sa.Column[Any], row_key: Any, tally: Tally
) -> None:
    (key,) = column.table.primary_key.columns
    with db.transaction() as session:
        # FOR UPDATE on PostgreSQL; on SQLite the write transaction (BEGIN IMMEDIATE) already
        # holds the writer lock. Either way nobody changes the row between read and write.
        ciphertext = session.execute(
            sa.select(column).where(key == row_key).with_for_update()
        ).scalar_one_or_none()
        if ciphertext is None:
            return  # deleted (or emptied) since the batch was read
        try:
            fresh = box.reencrypt(ciphertext)
        except OrchestratorError:
            tally.unreadable += 1
            return
        if fresh is None:
            tally.current += 1
            return
        session.execute(sa.update(column.table).where(key == row_key).values({column: fresh}))
        tally.retired += 1


def reencrypt(db: Database, box: SecretBox, batch_size: int = BATCH_SIZE) -> list[Tally]:
    """Re-encrypt every stored ciphertext under the box's primary key, one row per transaction.

    In each tally, ``retired`` counts the rows re-encrypted; rows that no key decrypts are
    counted as ``unreadable`` and left as they are.
    """
    tallies = []
    for column in CIPHERTEXT_COLUMNS:
        tally = Tally(f"{column.table.name}.{column.name}")
        for row_key, _ in _rows(db, column, batch_size):
            _reencrypt_row(db, box, column, row_key, tally)
        tallies.append(tally)
    return tallies


def survey(db: Database, box: SecretBox, batch_size: int = BATCH_SIZE) -> list[Tally]:
    """Count, without writing, which rows the primary key decrypts and which need another."""
    tallies = []
    for column in CIPHERTEXT_COLUMNS:
        tally = Tally(f"{column.table.name}.{column.name}")
        for _, ciphertext in _rows(db, column, batch_size):
            if box.under_primary(ciphertext):
                tally.current += 1
                continue
            try:
                box.decrypt(ciphertext)
                tally.retired += 1
            except OrchestratorError:
                tally.unreadable += 1
        tallies.append(tally)
    return tallies


def _refuse_unless_current(tallies: list[Tally], then: str) -> None:
    retired = sum(t.retired for t in tallies)
    unreadable = sum(t.unreadable for t in tallies)
    if retired:
        raise Conflict(
            f"{retired} stored ciphertext row(s) still need a retired key: run "
            f"'orchestrator secrets rotate-key' again (it re-encrypts them), then {then}"
        )
    if unreadable:
        raise Conflict(
            f"{unreadable} stored ciphertext row(s) decrypt with no key of the ring: a process "
            "may be using another key (check ORCH_SECRET_KEY and ORCH_DATA_DIR everywhere)"
        )


def rotate_key_file(db: Database, path: Path) -> tuple[int, list[Tally]]:
    """Put a new key at the head of the key file (old keys kept after it, for decryption), then
    re-encrypt every row under it. Returns the number of retired keys and the tallies."""
    with key_file_lock(path):
        keys = read_key_file(path)
        # The file changes first: running servers pick the new key up before their next use,
        # and keep reading what anyone wrote under an old key a moment ago.
        ring = [generate_key(), *keys]
        write_key_file(path, ring)
        return len(keys), reencrypt(db, SecretBox(ring))


def prune_key_file(db: Database, path: Path) -> int:
    """Drop the retired keys from the key file once every row decrypts with the primary key;
    refuse (``Conflict``, naming how many rows) otherwise. Returns the number of keys dropped."""
    with key_file_lock(path):
        keys = read_key_file(path)
        _refuse_unless_current(survey(db, SecretBox(keys)), "prune")
        if len(keys) > 1:
            write_key_file(path, keys[:1])
        return len(keys) - 1


def rotate_configured_key(db: Database, configured: str) -> list[Tally]:
    """Re-encrypt every row under the first key of ``ORCH_SECRET_KEY`` (which the operator
    chose; nothing is generated)."""
    return reencrypt(db, SecretBox(parse_setting(configured)))


def check_configured_prune(db: Database, configured: str) -> int:
    """How many retired keys ``ORCH_SECRET_KEY`` holds that no row needs any more; refuse
    (``Conflict``) while a row still needs one. The setting itself is the operator's to edit."""
    keys = parse_setting(configured)
    _refuse_unless_current(survey(db, SecretBox(keys)), "drop the retired keys")
    return len(keys) - 1
