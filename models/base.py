"""Declarative base and the column types shared by every table.

The tables are written for PostgreSQL (``uuid``, ``jsonb``, ``inet``,
``timestamptz``, native enums) and degrade to portable types on SQLite, the
embedded default used by the demo.
"""

from __future__ import annotations

import enum

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: The auction platform's tables the spec's foreign keys point to. They are not
#: Clarion's: see ``CLARION_PLATFORM_FOREIGN_KEYS`` and ``migrations/platform.py``.
PLATFORM_TABLES = ("users", "auctions", "bids", "auction_items")

JSONType = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
INETType = sa.String(45).with_variant(postgresql.INET(), "postgresql")
Timestamp = sa.DateTime(timezone=True)


def enum_type(enum_class: type[enum.Enum], name: str) -> sa.Enum:
    """A PostgreSQL enum named ``name`` holding the members' values (not their names)."""
    return sa.Enum(
        enum_class,
        name=name,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
        create_constraint=True,
    )


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
