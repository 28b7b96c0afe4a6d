"""The spec's foreign keys to the auction platform's tables.

``users``, ``auctions``, ``bids`` and ``auction_items`` belong to the
platform, not to Clarion. With ``CLARION_PLATFORM_FOREIGN_KEYS=true`` the
migrations create the spec's foreign keys to them (the tables must exist
first); standalone, the columns stay, indexed, without constraints.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

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
    pass


def create_platform_foreign_keys() -> None:
    bind = op.get_bind()
    existing = set(sa.inspect(bind).get_table_names())
    missing = sorted({ref for _, _, ref, _ in PLATFORM_FOREIGN_KEYS} - existing)
    if missing:
        raise PlatformTablesMissing(
            "CLARION_PLATFORM_FOREIGN_KEYS is true but the platform's tables "
            f"{', '.join(missing)} do not exist in this database; create them first or "
            "set CLARION_PLATFORM_FOREIGN_KEYS=false (standalone)"
        )
    for table, column, referred, referred_column in PLATFORM_FOREIGN_KEYS:
        # NOT VALID would skip checking old rows; a new install has none, so validate.
        op.create_foreign_key(
            fk_name(table, column, referred), table, referred, [column], [referred_column]
        )


def drop_platform_foreign_keys() -> None:
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, column, referred, _ in PLATFORM_FOREIGN_KEYS:
        name = fk_name(table, column, referred)
        if any(fk["name"] == name for fk in inspector.get_foreign_keys(table)):
            op.drop_constraint(name, table, type_="foreignkey")
