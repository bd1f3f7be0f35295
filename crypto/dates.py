"""Dates that always name an instant: the one rule for naive datetimes in the tree.

SQLite hands back naive datetimes (it keeps no offset), and operators type dates without
one; everything MSS stores or compares is in UTC, so a naive value *is* UTC. It lives in this
leaf package because certificate validity checks need it and every other layer may import it.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc"]


def as_utc(dt: datetime) -> datetime:
    """``dt`` with ``tzinfo=UTC`` when it is naive; an aware value is returned as it is.

    An aware value already names an instant, and its offset is kept on purpose: IMAP prints
    INTERNALDATE with the offset it was given (RFC 9051 §2.3.3). Call ``.astimezone(timezone.utc)``
    on the result to normalise the offset as well.
    """
    return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
