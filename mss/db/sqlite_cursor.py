"""One trip to the SQLite thread per statement, instead of four.

aiosqlite runs each connection's sqlite3 calls in a thread of its own; every call is a trip
there and back (a queue put, the thread's wake-up, `call_soon_threadsafe`, the loop's
wake-up). SQLAlchemy's aiosqlite adapter makes four trips per statement: make a cursor,
execute, fetch all rows, close the cursor. On the hot paths (a delivery is about eight
statements, an IMAP session cycle about thirty) those trips were a fifth of the event loop's
busy time (py-spy, `bench/README.md`).

`OneTripCursor` does the four steps in one function run in the connection's thread and keeps
what SQLAlchemy reads afterwards (the rows, `description`, `rowcount`, `lastrowid`). It is the
same sqlite3 work in the same order on the same connection, under the adapter's own mutex, so
transactions, errors (translated by the adapter as before) and results are unchanged; rowcount
is read after the rows are fetched, which is also what sqlite3 needs to count RETURNING rows.

`use_one_trip_cursors` switches one connection of our engines over (`mss.db.engine`), by
class: the adapter's connection class has no per-instance slot for its cursor class.
Server-side cursors (`stream()`) keep the adapter's own class.
"""

from __future__ import annotations

import collections
import sqlite3
from collections.abc import Sequence
from typing import Any

from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_connection, AsyncAdapt_aiosqlite_cursor
from sqlalchemy.util import EMPTY_DICT
from sqlalchemy.util.concurrency import await_

_Row = tuple[Any, ...]
_Outcome = tuple[list[_Row] | None, Any, int, int | None]


def _run(conn: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In the connection's thread: the whole statement, cursor to close."""
    cur = conn.cursor()
    try:
        if many:
            cur.executemany(operation, parameters)
        elif parameters is None:
            cur.execute(operation)
        else:
            cur.execute(operation, parameters)
        description = cur.description
        rows = cur.fetchall() if description else None
        return rows, description, cur.rowcount, cur.lastrowid
    finally:
        cur.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    __slots__ = ("_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No cursor is made here (that was a trip of its own): `_run` makes one per statement.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._cursor = None
        self._soft_closed_memoized = EMPTY_DICT
        self._rows: collections.deque[_Row] = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None

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
        return 1  # sqlite3's default

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        pass

    async def _one_trip(self, operation: str, parameters: Any, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            aconn = self._connection
            rows, self._description, self._rowcount, self._lastrowid = await aconn._execute(
                _run, aconn._conn, operation, parameters, many
            )
            self._rows = collections.deque(rows) if rows else collections.deque()

    def execute(self, operation: Any, parameters: Any = None) -> None:
        try:
            await_(self._one_trip(operation, parameters, False))
        except Exception as error:  # noqa: BLE001 - translated as the adapter does
            self._adapt_connection._handle_exception(error)

    def executemany(self, operation: Any, seq_of_parameters: Sequence[Any]) -> None:
        try:
            await_(self._one_trip(operation, seq_of_parameters, True))
        except Exception as error:  # noqa: BLE001 - translated as the adapter does
            self._adapt_connection._handle_exception(error)

    async def _async_soft_close(self) -> None:
        """Nothing to close: the sqlite3 cursor was closed in its thread."""

    def close(self) -> None:
        self._rows.clear()

    def nextset(self) -> None:
        return None

    def setinputsizes(self, *inputsizes: Any) -> None:
        return None


class OneTripConnection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor


def use_one_trip_cursors(dbapi_connection: object) -> None:
    """Make an aiosqlite connection of SQLAlchemy's adapter use `OneTripCursor`."""
    if type(dbapi_connection) is AsyncAdapt_aiosqlite_connection:
        dbapi_connection.__class__ = OneTripConnection
