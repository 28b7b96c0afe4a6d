"""The spec's foreign keys to the auction platform's tables.

``users``, ``auctions``, ``bids`` and ``auction_items`` belong to the
platform, not to Clarion. With ``CLARION_PLATFORM_FOREIGN_KEYS=true`` the
migrations create the spec's foreign keys to them (the tables must exist
first); standalone, the columns stay, indexed, without constraints.

This module describes the foreign keys as of the head revision, for tests and
for the next revision that changes them. A revision does not call into it: it
carries its own copy of what it creates, so that it replays the same way
forever; it imports only the error type it raises.
"""

from __future__ import annotations

#: (table, column, platform table, platform column): exactly the spec's list.
PLATFORM_FOREIGN_KEYS = (
    ("notifications", "user_id", "users", "user_id"),
    ("notifications", "auction_id", "auctions", "auction_id"),
    ("notifications", "bid_id", "bids", "bid_id"),
    ("notifications", "item_id", "auction_items", "item_id"),
    ("websocket_connections", "user_id", "users", "user_id"),
    ("real_time_events", "auction_id", "auctions", "auction_id"),
    ("real_time_events", "user_id", "users", "user_id"),
    ("real_time_events", "bid_id", "bids", "bid_id"),
    ("real_time_events", "item_id", "auction_items", "item_id"),
)


def fk_name(table: str, column: str, referred: str) -> str:
    return f"fk_{table}_{column}_{referred}"


class PlatformTablesMissing(RuntimeError):
    """Platform mode, but the platform's tables are not there (raised by revisions:
    keep this name as it is)."""
