"""Addresses Clarion must not send to again, and the one code that writes them.

A row is added when a provider tells us an address is dead or unwanted: an
SES permanent bounce or complaint, an FCM token reported unregistered, a
webhook endpoint answering 410 (those two also disable the user's address
row, see :mod:`models.writeback`), or an operator (``clarion suppression
add``). While a row is active (``lifted_at`` is NULL) every delivery to that
address fails at once with ``suppressed``, without a provider call. An
operator lifts it (``clarion suppression remove``); the row stays, as history.

Addresses are compared as :func:`normal_address` makes them (email addresses
lower-cased), so ``Alice@Example.com`` and ``alice@example.com`` are one.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, JSONType, Timestamp
from models.enums import Channel
from models.notifications import ChannelType

__all__ = [
    "Suppression",
    "active_suppressions",
    "lift",
    "list_suppressions",
    "normal_address",
    "suppress",
]


class Suppression(Base):
    """One address that must not be sent to, why, and on whose word."""

    __tablename__ = "suppressions"

    suppression_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    channel: Mapped[Channel] = mapped_column(ChannelType)
    address: Mapped[str] = mapped_column(sa.String(2048))
    #: bounce, complaint, reject, unregistered, gone, operator
    reason: Mapped[str] = mapped_column(sa.String(50))
    #: Who said so: ses, twilio, fcm, webhook, operator.
    source: Mapped[str] = mapped_column(sa.String(50))
    #: The receipt that caused it (bounce type, feedback id, error code), no body.
    source_receipt: Mapped[Any | None] = mapped_column(JSONType)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    lifted_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    lifted_reason: Mapped[str | None] = mapped_column(sa.String(255))

    __table_args__ = (
        # One active suppression per address; lifted ones stay as history.
        sa.Index(
            "uq_suppressions_active",
            "channel",
            "address",
            unique=True,
            postgresql_where=sa.text("lifted_at IS NULL"),
            sqlite_where=sa.text("lifted_at IS NULL"),
        ),
    )


_S: sa.Table = Suppression.__table__  # type: ignore[assignment]


def normal_address(channel: Channel, address: str) -> str:
    """The form addresses are stored and compared in (email: trimmed, lower-cased)."""
    address = address.strip()
    return address.lower() if channel is Channel.EMAIL else address


def suppress(
    conn: Connection,
    channel: Channel,
    address: str,
    *,
    reason: str,
    source: str,
    receipt: dict[str, Any] | None = None,
) -> bool:
    """Suppress ``address`` on ``channel``; False if it was suppressed already.

    Concurrent calls for one address add one row (the partial unique index;
    the loser's insert is a no-op).
    """
    address = normal_address(channel, address)
    values = {
        "suppression_id": uuid.uuid4(),
        "channel": channel,
        "address": address,
        "reason": reason,
        "source": source,
        "source_receipt": receipt,
        "created_at": utcnow(),
    }
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        stmt = (
            insert(_S)
            .values(values)
            .on_conflict_do_nothing(
                index_elements=["channel", "address"], index_where=sa.text("lifted_at IS NULL")
            )
        )
        return conn.execute(stmt.returning(_S.c.suppression_id)).first() is not None
    if active_suppressions(conn, channel, [address]):
        return False
    conn.execute(sa.insert(_S).values(values))
    return True


def active_suppressions(conn: Connection, channel: Channel, addresses: Iterable[str]) -> set[str]:
    """Which of ``addresses`` (in any case) are suppressed on ``channel``, normalised."""
    wanted = {normal_address(channel, a) for a in addresses}
    if not wanted:
        return set()
    rows = conn.execute(
        sa.select(_S.c.address).where(
            _S.c.channel == channel, _S.c.address.in_(wanted), _S.c.lifted_at.is_(None)
        )
    )
    return {row.address for row in rows}


def lift(conn: Connection, channel: Channel, address: str, *, reason: str | None = None) -> bool:
    """Lift the active suppression of ``address``; False if there was none."""
    result = conn.execute(
        sa.update(_S)
        .where(
            _S.c.channel == channel,
            _S.c.address == normal_address(channel, address),
            _S.c.lifted_at.is_(None),
        )
        .values(lifted_at=utcnow(), lifted_reason=reason)
    )
    return bool(result.rowcount)


def list_suppressions(
    conn: Connection,
    *,
    channel: Channel | None = None,
    include_lifted: bool = False,
    limit: int = 1000,
) -> list[Any]:
    """Suppressions, newest first (active only unless ``include_lifted``)."""
    stmt = sa.select(_S).order_by(_S.c.created_at.desc()).limit(limit)
    if channel is not None:
        stmt = stmt.where(_S.c.channel == channel)
    if not include_lifted:
        stmt = stmt.where(_S.c.lifted_at.is_(None))
    return list(conn.execute(stmt))
