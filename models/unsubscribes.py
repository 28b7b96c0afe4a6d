"""Users who unsubscribed from a category of email, by one click (RFC 8058).

Kept here until the per-user preference model (channel and category
opt-outs) exists: its owner folds these rows in. The email path reads them
(:func:`unsubscribed`) and fails such a delivery with ``unsubscribed``
instead of calling a provider.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, Timestamp

__all__ = ["EmailUnsubscribe", "record_unsubscribe", "unsubscribed"]


class EmailUnsubscribe(Base):
    """``user_id`` wants no more email of ``category``."""

    __tablename__ = "email_unsubscribes"

    user_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True)
    category: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    #: one_click (the List-Unsubscribe POST), page (the confirmation page's button)
    source: Mapped[str] = mapped_column(sa.String(50))
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )


_E: sa.Table = EmailUnsubscribe.__table__  # type: ignore[assignment]


def record_unsubscribe(conn: Connection, user_id: uuid.UUID, category: str, source: str) -> bool:
    """Opt ``user_id`` out of ``category`` by email; False if it was already (idempotent)."""
    values = {"user_id": user_id, "category": category, "source": source, "created_at": utcnow()}
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(_E).values(values).on_conflict_do_nothing().returning(_E.c.user_id)
        return conn.execute(stmt).first() is not None
    exists = conn.execute(
        sa.select(_E.c.user_id).where(_E.c.user_id == user_id, _E.c.category == category)
    ).first()
    if exists:
        return False
    conn.execute(sa.insert(_E).values(values))
    return True


def unsubscribed(
    conn: Connection, wanted: Iterable[tuple[uuid.UUID, str]]
) -> set[tuple[uuid.UUID, str]]:
    """Which (user, category) pairs of ``wanted`` are unsubscribed from email."""
    pairs = set(wanted)
    if not pairs:
        return set()
    rows = conn.execute(
        sa.select(_E.c.user_id, _E.c.category).where(
            _E.c.user_id.in_({u for u, _ in pairs}), _E.c.category.in_({c for _, c in pairs})
        )
    )
    return {(r.user_id, r.category) for r in rows} & pairs
