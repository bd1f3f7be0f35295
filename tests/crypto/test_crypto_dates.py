"""`crypto.dates.as_utc`: naive datetimes are UTC, aware ones keep their offset."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from crypto.dates import as_utc


def test_naive_is_tagged_utc_without_moving() -> None:
    got = as_utc(datetime(2026, 11, 24, 3, 8, 1))
    assert got.tzinfo is UTC
    assert (got.year, got.hour, got.minute) == (2026, 3, 8)


def test_aware_keeps_its_offset_and_instant() -> None:
    paris = timezone(timedelta(hours=1))
    dt = datetime(2026, 11, 24, 4, 8, 1, tzinfo=paris)
    got = as_utc(dt)
    assert got is dt
    assert got.utcoffset() == timedelta(hours=1)
    assert got == datetime(2026, 11, 24, 3, 8, 1, tzinfo=UTC)
