"""SQLite through aiosqlite, one round trip per statement.

Every call on an aiosqlite connection runs in the connection's own thread and comes back
through the event loop: a round trip costs two thread switches and a wake-up of the loop, more
than most of this application's statements take to run. SQLAlchemy's adapter makes four per
statement (open a cursor, execute, fetch the rows, close the cursor), and the engine's
``BEGIN`` was one more. Here a statement is one call: the transaction's ``BEGIN`` (with its
first statement), the statement, its rows. Ending a transaction that never began (no
statement ran, or a reader's, which begins none) costs nothing.

Built on SQLAlchemy's aiosqlite adapter (``sqlalchemy.dialects.sqlite.aiosqlite``) and on
aiosqlite's queue of calls for its thread (``Connection._execute``), as that adapter is:
``pyproject.toml`` bounds both versions.
"""

from __future__ import annotations

import sqlite3
from collections import deque
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
    AsyncAdapt_aiosqlite_ss_cursor,
)
from sqlalchemy.util.concurrency import await_

_Outcome = tuple[Any, int, int | None, list[Any] | None]


def _run(conn: sqlite3.Connection, begin: str | None, sql: str, params: Any, many: bool) -> _Outcome:
    """In the connection's thread: ``begin``, then the statement; its description, row count,
    last row id and rows."""
    if begin:
        _begin(conn, begin)
    cursor = conn.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, () if params is None else params)
        rows = cursor.fetchall() if cursor.description else None
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


def _begin(conn: sqlite3.Connection, begin: str) -> None:
    conn.execute(begin).close()


class Cursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statements each run in one call to the connection's thread, rows and all;
    no driver cursor outlives a statement."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: Connection):
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._rows = deque()
        self._description: Any = None
        self._rowcount, self._lastrowid, self._arraysize = -1, None, 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> int | None:  # type: ignore[override]
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        return None  # nothing is open between calls

    def close(self) -> None:
        self._rows.clear()

    async def _call(self, operation: Any, parameters: Any, many: bool) -> None:
        connection: Connection = self._adapt_connection  # type: ignore[assignment]
        async with connection._execute_mutex:
            begin = connection.take_begin()
            driver = self._connection
            outcome = await driver._execute(_run, driver._conn, begin, operation, parameters, many)  # type: ignore[attr-defined]
        self._description, self._rowcount, self._lastrowid, rows = outcome
        if rows is not None:
            self._rows = deque(rows)

    def execute(self, operation: Any, parameters: Any = None) -> None:
        try:
            await_(self._call(operation, parameters, False))
        except Exception as error:
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Any) -> None:
        try:
            await_(self._call(operation, seq_of_parameters, True))
        except Exception as error:
            self._adapt_connection._handle_exception(error)


class StreamingCursor(AsyncAdapt_aiosqlite_ss_cursor):
    """SQLAlchemy's cursor for streamed results (rows fetched a batch at a time), after the
    transaction's pending ``BEGIN``."""

    __slots__ = ()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        begin = self._adapt_connection.take_begin()  # type: ignore[attr-defined]
        if begin:
            driver = self._connection
            await driver._execute(_begin, driver._conn, begin)  # type: ignore[attr-defined]
        return await super()._execute_async(operation, parameters)


class Connection(AsyncAdapt_aiosqlite_connection):
    """A connection whose ``BEGIN`` waits for the transaction's first statement."""

    __slots__ = ("_pending_begin",)

    _cursor_cls = Cursor
    _ss_cursor_cls = StreamingCursor

    def __init__(self, dbapi: Any, connection: aiosqlite.Connection):
        super().__init__(dbapi, connection)
        self._pending_begin: str | None = None

    def begin_with_next_statement(self, statement: str) -> None:
        self._pending_begin = statement

    def take_begin(self) -> str | None:
        begin, self._pending_begin = self._pending_begin, None
        return begin

    def rollback(self) -> None:
        self.take_begin()  # a BEGIN still pending never began a transaction
        if self._connection.in_transaction:  # else there is nothing to end: no round trip
            super().rollback()

    def commit(self) -> None:
        self.take_begin()
        if self._connection.in_transaction:
            super().commit()


class DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *args: Any, **kwargs: Any) -> Connection:
        plain = super().connect(*args, **kwargs)
        return Connection(self, plain._connection)


def dbapi() -> DBAPI:
    """The module to give ``create_async_engine(module=...)`` for a ``sqlite+aiosqlite`` URL."""
    return DBAPI(aiosqlite, sqlite3)
