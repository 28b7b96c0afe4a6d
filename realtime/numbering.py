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
#: The columns an event's INSERT sets: all but its number (drawn by the INSERT)
#: and the two the gateways fill in later (SQL NULL until then).
INSERTED = tuple(
    c.name
    for c in _table.c
    if c.name not in ("sequence_number", "delivery_status", "acknowledgments")
)
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
def numbered_insert(dialect_name: str, rows: int = 1) -> sa.Insert:
    """The INSERT of ``rows`` events, each ``sequence_number`` drawn under the keys' locks.

    Row ``i``'s values are bound as ``<column>_<i>`` (the columns of
    :data:`INSERTED`), plus ``ordering_keys`` on
    PostgreSQL: the lock names of every row's keys (:func:`lock_keys`). Each
    row's number is its own subquery, which locks all of them before its
    ``nextval``: whichever row PostgreSQL numbers first, every lock is held
    by then. Returns ``event_id, sequence_number`` per row. Several rows are
    for PostgreSQL only (SQLite would read one ``max`` for all of them).
    """
    if rows > 1 and dialect_name != "postgresql":
        raise ValueError("a multi-row numbered INSERT needs PostgreSQL")
    values = [
        {
            **{c: sa.bindparam(f"{c}_{i}", type_=_table.c[c].type) for c in INSERTED},
            "sequence_number": (
                _locked_nextval() if dialect_name == "postgresql" else _max_plus_one()
            ),
        }
        for i in range(rows)
    ]
    return sa.insert(_table).values(values).returning(_table.c.event_id, _table.c.sequence_number)


def bind_rows(rows: Sequence[dict[str, object]]) -> dict[str, object]:
    """The parameters of :func:`numbered_insert` for ``rows`` (column -> value each)."""
    return {f"{c}_{i}": row.get(c) for i, row in enumerate(rows) for c in INSERTED}


def lock_keys(keys: Sequence[str]) -> list[str]:
    """The advisory lock names of ``keys``, sorted (every publisher locks in the same order)."""
    return sorted({LOCK_PREFIX + key for key in keys})
