"""A statement run on the driver's cursor (``storage.driver_statements``) stores what
SQLAlchemy's own execution would, on SQLite and PostgreSQL, and fails as it would: a driver
error arrives as SQLAlchemy's, and a lost connection is invalidated and seen as an outage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from orchestrator.config import Settings
from orchestrator.errors import DatabaseUnavailable
from orchestrator.storage.db import Database
from orchestrator.storage.driver_statements import DriverStatement
from orchestrator.storage.models import IdempotencyKey

from ..conftest import postgres_admin

KEYS: sa.Table = IdempotencyKey.__table__  # type: ignore[attr-defined]
# A time with no microseconds: SQLite stores times as text, where a format that dropped them
# would compare wrongly with SQLAlchemy's.
WHOLE_SECOND = datetime(2026, 12, 5, 6, 0, 0, tzinfo=UTC)
ROW = {
    "project": "default",
    "route": "jobs",
    "fingerprint": "f" * 64,
    "status_code": 201,
    "response_body": '{"id":"x"}',
    "response_headers": {"Location": "/v1/projects/default/jobs/x", "Ünïcode": "ü"},
}


def insert(dialect_name: str, *, on_conflict: bool) -> sa.Insert:
    """An insert of a key's row (``key`` and ``create_time`` bound), returning its id; with
    ``on_conflict``, a taken key inserts nothing and returns no row."""
    dialect_insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    statement = dialect_insert(KEYS).values(
        **{column: sa.bindparam(column) for column in ROW},
        key=sa.bindparam("key"),
        create_time=sa.bindparam("create_time", type_=KEYS.c.create_time.type),
    )
    if on_conflict:
        statement = statement.on_conflict_do_nothing(index_elements=["project", "route", "key"])
    return statement.returning(KEYS.c.id)


@pytest.fixture
def database(make_settings: Callable[..., Settings]) -> Iterator[Database]:
    url = make_settings(runner_enabled=False).database_url
    assert url is not None
    built = Database(url)
    built.upgrade_schema()
    yield built
    built.dispose()


def stored(database: Database, key: str) -> sa.Row[tuple[object, ...]]:
    """The key's row as the driver gives it back (times and JSON as stored, not converted)."""
    with database.read() as session:
        connection = session.connection()
        return connection.exec_driver_sql(
            "SELECT create_time, response_headers FROM idempotency_keys WHERE key = "
            + ("%(key)s" if database.is_postgres else ":key"),
            {"key": key},
        ).one()


def test_values_are_stored_as_sqlalchemy_stores_them(database: Database) -> None:
    statement = insert(database.dialect, on_conflict=False)
    driver = DriverStatement(statement, database.write_engine.dialect)
    for when in (WHOLE_SECOND, WHOLE_SECOND + timedelta(microseconds=1)):
        with database.transaction() as session:
            connection = session.connection()
            by_driver = driver.first(connection, {**ROW, "key": f"d{when}", "create_time": when})
            by_sqlalchemy = connection.execute(
                statement, {**ROW, "key": f"s{when}", "create_time": when}
            ).one()
        assert by_driver is not None and isinstance(by_driver[0], int)
        assert by_driver[0] != by_sqlalchemy[0]
        # Byte for byte what SQLAlchemy stored: the time as naive UTC (text on SQLite, in its
        # format), the headers as JSON.
        assert tuple(stored(database, f"d{when}")) == tuple(stored(database, f"s{when}"))
        with database.read() as session:
            row = session.get(IdempotencyKey, by_driver[0])
            assert row is not None
            assert row.create_time == when
            assert row.response_headers == ROW["response_headers"]
            assert row.status_code == 201 and row.response_body == ROW["response_body"]
    # A time compares as SQLAlchemy's do, whichever way each row was written: two rows at the
    # whole second, two a microsecond later, and all four at or after the whole second (on
    # SQLite a time stored without its ".000000" would sort before SQLAlchemy's bound one).
    with database.read() as session:
        connection = session.connection()
        at = sa.bindparam("t", type_=KEYS.c.create_time.type)
        count = sa.select(sa.func.count()).select_from(KEYS)
        before = {"t": WHOLE_SECOND + timedelta(microseconds=1)}
        assert connection.execute(count.where(KEYS.c.create_time < at), before).scalar_one() == 2
        since = {"t": WHOLE_SECOND}
        assert connection.execute(count.where(KEYS.c.create_time >= at), since).scalar_one() == 4


def test_a_statement_that_returns_no_row_gives_none(database: Database) -> None:
    driver = DriverStatement(
        insert(database.dialect, on_conflict=True), database.write_engine.dialect
    )
    values = {**ROW, "key": "once", "create_time": WHOLE_SECOND}
    with database.transaction() as session:
        assert driver.first(session.connection(), values) is not None
        assert driver.first(session.connection(), values) is None
    with database.read() as session:
        assert session.connection().execute(sa.select(sa.func.count(KEYS.c.id))).scalar_one() == 1


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(database: Database) -> None:
    driver = DriverStatement(
        insert(database.dialect, on_conflict=False), database.write_engine.dialect
    )
    values = {**ROW, "key": "taken", "create_time": WHOLE_SECOND}
    with database.transaction() as session:
        driver.first(session.connection(), values)
    with pytest.raises(sa.exc.IntegrityError) as raised:
        with database.transaction() as session:
            driver.first(session.connection(), values)
    assert raised.value.statement == driver.sql
    assert not raised.value.connection_invalidated
    # The failed transaction was rolled back and its connection is fine for the next one.
    with database.transaction() as session:
        assert driver.first(session.connection(), {**values, "key": "next"}) is not None


def test_it_runs_only_in_a_begun_transaction(database: Database) -> None:
    driver = DriverStatement(
        insert(database.dialect, on_conflict=False), database.write_engine.dialect
    )
    with database.write_engine.connect() as connection:
        with pytest.raises(sa.exc.InvalidRequestError, match="begun transaction"):
            driver.first(connection, {**ROW, "key": "k", "create_time": WHOLE_SECOND})


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_lost_connection_is_invalidated_and_is_an_outage(database: Database) -> None:
    driver = DriverStatement(
        insert(database.dialect, on_conflict=False), database.write_engine.dialect
    )
    values = {**ROW, "key": "lost", "create_time": WHOLE_SECOND}
    assert not database.outage.active
    with pytest.raises(DatabaseUnavailable) as raised:
        with database.transaction() as session:
            connection = session.connection()
            backend = connection.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
            with postgres_admin() as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
            driver.first(connection, values)
    # An outage (a 503 to the API), from SQLAlchemy's error for a connection it invalidated.
    assert raised.value.outage
    cause = raised.value.__cause__
    assert isinstance(cause, sa.exc.OperationalError) and cause.connection_invalidated
    assert cause.statement == driver.sql
    # Its parameters are hidden, as the engine hides them for its own statements.
    assert str(ROW["response_body"]) not in str(cause) and "hidden" in str(cause)
    # The engine's ``handle_error`` listener saw it, as for any statement of the process.
    assert database.outage.active
    # The pool dropped the connection: the next transaction gets a new one. (Its statements
    # end the outage, as SQLAlchemy's do; the driver's do not, being none of its.)
    with database.transaction() as session:
        session.connection().execute(sa.text("SELECT 1"))
        assert not database.outage.active
        assert driver.first(session.connection(), values) is not None
