"""A statement run on the database driver's own cursor, for a hot path where SQLAlchemy's
execution (its context, its result object, its events) costs the request more than the
database's work: an ``Idempotency-Key``'s row cost its submit 245-270 µs of CPU through
``Connection.execute``, 113-143 µs this way (docs/benchmarks.md, "Idempotency keys").

What is kept of SQLAlchemy: the statement is built and compiled by it (once per dialect, casts
and parameter style included), every parameter passes through its type's bind processor as it
would in ``Connection.execute``, and a driver error is handled by the connection as its own
(wrapped as ``DBAPIError``, a lost connection invalidated, the ``handle_error`` listeners that
track outages called). What is not: the statement is not logged by SQLAlchemy's echo, and no
``after_cursor_execute`` listener sees it (so its success alone does not end an outage; the
next statement through SQLAlchemy does).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.sql.compiler import SQLCompiler


class DriverStatement:
    """``statement`` compiled for ``dialect``, run by ``first`` on a connection of it."""

    def __init__(self, statement: sa.ClauseElement, dialect: sa.Dialect) -> None:
        compiled = statement.compile(dialect=dialect)
        assert isinstance(compiled, SQLCompiler)  # a statement's, not DDL's
        self.sql = compiled.string
        binds = compiled.binds
        # Positional styles (SQLite's ``?``) take the values in the order the SQL names them.
        self._order: tuple[str, ...] | None = (
            tuple(compiled.positiontup) if compiled.positiontup is not None else None
        )
        self._processors: dict[str, Callable[[Any], Any] | None] = {
            # The dialect's own type (psycopg's JSON, say), as ``Connection.execute`` uses it.
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in binds.items()
        }

    def _driver_values(self, params: Mapping[str, Any]) -> Any:
        values = {
            name: params[name] if processor is None else processor(params[name])
            for name, processor in self._processors.items()
        }
        if self._order is None:
            return values
        return tuple(values[name] for name in self._order)

    def first(self, connection: sa.Connection, params: Mapping[str, Any]) -> tuple[Any, ...] | None:
        """Run the statement in ``connection``'s transaction (begun, as a session's connection
        is); its first row, if it has one.

        ``params`` has a value for each of the statement's bound parameters, by name, as
        ``Connection.execute`` takes them. A driver error is raised as SQLAlchemy raises it.
        """
        if not connection.in_transaction():
            # SQLAlchemy's own execution would begin one (``begin`` listeners included).
            raise sa.exc.InvalidRequestError("a DriverStatement runs in a begun transaction")
        values = self._driver_values(params)
        driver_connection = connection.connection
        cursor = driver_connection.cursor()
        try:
            cursor.execute(self.sql, values)
            row = cursor.fetchone() if cursor.description is not None else None
        except Exception as exc:
            # Handled as ``Connection.execute`` handles it, by the same (internal) method: it
            # wraps it as ``DBAPIError``, invalidates a lost connection, calls the
            # ``handle_error`` listeners, and raises.
            connection._handle_dbapi_exception(exc, self.sql, values, cursor, None)
        finally:
            cursor.close()
        return None if row is None else tuple(row)
