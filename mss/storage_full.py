"""A full disk (or a full database) is a temporary refusal, not a server bug.

When the store cannot grow, the write is rolled back and nothing was stored, so the client
may simply try again later: IMAP answers `NO [UNAVAILABLE]` (RFC 5530 3) and SMTP
`452 4.3.1` ("mail system full", RFC 3463 3.4; RFC 5321 4.2.2 452 "insufficient system
storage"). Any other database error stays what it was (`[SERVERBUG]`, `451 4.3.0`).

The database errors recognised:

* SQLite `SQLITE_FULL` (13, "database or disk is full"): raised both on a full file system
  (ENOSPC while growing the database or its WAL) and past `PRAGMA max_page_count`;
* PostgreSQL SQLSTATE `53100` `disk_full` (class 53, insufficient resources), raised when a
  relation or the WAL cannot be extended.

Drivers wrap each other's exceptions (SQLAlchemy's `DBAPIError.orig`, the asyncpg adapter,
`__cause__`), so the whole chain is searched.
"""

from __future__ import annotations

import sqlite3

from mss.refusals import Reason, Refusal

__all__ = ["PG_DISK_FULL", "is_storage_full", "storage_full_refusal"]

#: PostgreSQL's SQLSTATE for "disk full" (Appendix A, class 53 Insufficient Resources).
PG_DISK_FULL = "53100"

_PUBLIC = "The server's storage is full; nothing was stored, try again later"


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo and len(seen) < 16:
        e = todo.pop()
        if e is None or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [getattr(e, "orig", None), e.__cause__, e.__context__]
    return seen


def is_storage_full(exc: BaseException) -> bool:
    """True when ``exc`` (or what it wraps) says the database cannot grow."""
    for e in _chain(exc):
        if isinstance(e, sqlite3.Error) and getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL:
            return True
        if getattr(e, "sqlstate", None) == PG_DISK_FULL or getattr(e, "pgcode", None) == PG_DISK_FULL:
            return True
    return False


def storage_full_refusal(exc: BaseException) -> Refusal | None:
    """The `Refusal` a full store is answered with, or None for any other error."""
    if not is_storage_full(exc):
        return None
    return Refusal(Reason.STORAGE_FULL, _PUBLIC, f"storage full: {type(exc).__name__}: {exc}")
