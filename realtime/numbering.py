"""An event's sequence number, in commit order per subscription key, inside its INSERT.

A sequence hands out numbers in call order, but transactions commit in any
order: a client resuming after number 11 would never see a 10 that committed
later. So, on PostgreSQL, the number is taken under a transaction-level
advisory lock per subscription key (its auction, its topics, in a fixed
order: no deadlock between publishers): a second event for the same key
waits until the first one's transaction ends. Events with no key in common
do not wait for each other.

The locks and ``nextval`` are one scalar subquery of the event's INSERT, so
that numbering and inserting cost one statement (one round trip; with
autocommit, the commit too). The locks are taken by a function scan under an
aggregate, which consumes every row before the outer ``nextval`` is
evaluated: the number is drawn only once all the locks are held.

On SQLite (no sequences, one writer at a time) the number is ``max + 1``,
read by the same INSERT that its single writer lock serialises.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from models.realtime import EVENT_SEQUENCE, RealTimeEvent

#: Prefix of the advisory lock keys (hashed with ``hashtextextended``).
LOCK_PREFIX = "clarion:events:"

_table = cast(sa.Table, RealTimeEvent.__table__)
_keys = sa.bindparam("ordering_keys", type_=postgresql.ARRAY(sa.Text()))


def _locked_nextval() -> sa.ScalarSelect[int]:
    keys = sa.func.unnest(_keys).table_valued(sa.column("key", sa.Text())).render_derived("k")
    lock_id = sa.func.hashtextextended(keys.c.key, sa.literal_column("0"))
    locks = sa.select(sa.func.pg_advisory_xact_lock(lock_id).label("locked")).subquery("locks")
    held = sa.select(sa.func.count().label("held")).select_from(locks).subquery("held")
    return sa.select(EVENT_SEQUENCE.next_value()).select_from(held).scalar_subquery()


def _max_plus_one() -> sa.ScalarSelect[int]:
    return sa.select(
        sa.func.coalesce(sa.func.max(_table.c.sequence_number), 0) + 1
    ).scalar_subquery()


@functools.cache
def numbered_insert(dialect_name: str) -> sa.Insert:
    """The INSERT of one event whose ``sequence_number`` is drawn under its keys' locks.

    Values are bound by name (every column of ``real_time_events`` but
    ``sequence_number``) plus ``ordering_keys`` on PostgreSQL
    (:func:`lock_keys`); it returns the number.
    """
    number = _locked_nextval() if dialect_name == "postgresql" else _max_plus_one()
    return sa.insert(_table).values(sequence_number=number).returning(_table.c.sequence_number)


def lock_keys(keys: Sequence[str]) -> list[str]:
    """The advisory lock names of ``keys``, sorted (every publisher locks in the same order)."""
    return sorted({LOCK_PREFIX + key for key in keys})
