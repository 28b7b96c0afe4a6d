"""The one clock: timezone-aware UTC, the only kind of time Clarion stores."""

from __future__ import annotations

import datetime as dt


def utcnow() -> dt.datetime:
    """Now, timezone-aware, in UTC."""
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """Mark a naive datetime as UTC (SQLite hands them back naive); aware ones pass."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)
