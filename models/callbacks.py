"""Clarion's own status callbacks to the platform: a transactional outbox.

When a delivery reaches an outcome the platform asked to hear about
(``CLARION_STATUS_CALLBACK_EVENTS``: sent, delivered, failed, bounced), the
writer that makes it so (the workers' write-back, a provider's receipt)
inserts a ``status_callbacks`` row **in the same transaction**. Neither can
exist without the other: a process that dies after the commit leaves the row
to be sent, one that dies before it leaves neither.

The scheduler relays due rows to the broker (:meth:`CallbackOutbox.claim_due`
gives each a lease, so a lost message or a worker killed mid-post is handed
out again when it runs out); a worker posts it, signed, with the webhook
channel's code, and records the outcome here. ``event_id`` is the
``webhook-id`` of every try, so the receiver deduplicates: delivery is at
least once.

The only code that writes ``status_callbacks``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from clarion.core.settings import Settings
from models.base import Base, JSONType, Timestamp
from models.enums import Channel
from models.notifications import ChannelType, Notification

__all__ = [
    "CallbackEvent",
    "CallbackOutbox",
    "CallbackState",
    "PendingCallback",
    "StatusCallback",
    "callback_events",
    "record_events",
]


class CallbackState(enum.StrEnum):
    PENDING = "pending"  # to be posted (again)
    SENT = "sent"  # the platform answered 2xx
    FAILED = "failed"  # refused for good, or attempts ran out (dead-lettered)


class StatusCallback(Base):
    """One event to tell the platform about, and how telling it went."""

    __tablename__ = "status_callbacks"

    #: The ``webhook-id`` of every try: the receiver's deduplication key.
    event_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    notification_id: Mapped[uuid.UUID] = mapped_column(
        sa.Uuid, sa.ForeignKey("notifications.notification_id", ondelete="CASCADE")
    )
    delivery_id: Mapped[uuid.UUID] = mapped_column(sa.Uuid)
    channel: Mapped[Channel] = mapped_column(ChannelType)
    #: sent, delivered, failed, bounced
    event: Mapped[str] = mapped_column(sa.String(20))
    #: What happened: provider, provider message id, error, receipt kind, time.
    detail: Mapped[Any] = mapped_column(JSONType)
    state: Mapped[str] = mapped_column(sa.String(20), default=CallbackState.PENDING.value)
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0", default=0)
    last_error: Mapped[str | None] = mapped_column(sa.Text)
    #: NULL or past while pending: the scheduler hands it to the broker.
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)

    __table_args__ = (
        sa.Index(
            "ix_status_callbacks_due",
            "lease_expires_at",
            postgresql_where=sa.text("state = 'pending'"),
            sqlite_where=sa.text("state = 'pending'"),
        ),
        sa.Index("ix_status_callbacks_notification_id", "notification_id"),
    )


_C: sa.Table = StatusCallback.__table__  # type: ignore[assignment]
_N: sa.Table = Notification.__table__  # type: ignore[assignment]


def callback_events(settings: Settings) -> frozenset[str]:
    """The events to record: ``CLARION_STATUS_CALLBACK_EVENTS``, none without a URL."""
    if not settings.status_callback_url:
        return frozenset()
    return frozenset(settings.status_callback_events)


@dataclasses.dataclass(frozen=True, slots=True)
class CallbackEvent:
    """A delivery's outcome, to be told to the platform."""

    notification_id: uuid.UUID
    delivery_id: uuid.UUID
    channel: Channel
    event: str
    provider: str | None = None
    provider_message_id: str | None = None
    error: str | None = None
    #: The provider report that caused it (``Bounce``, ``undelivered``), if any.
    receipt: str | None = None
    occurred_at: dt.datetime | None = None


def record_events(conn: Connection, events: Iterable[CallbackEvent], wanted: frozenset[str]) -> int:
    """Insert the outbox rows of ``events`` whose kind is ``wanted``, in the caller's
    transaction; returns how many."""
    now = utcnow()
    rows = [
        {
            "event_id": uuid.uuid4(),
            "notification_id": e.notification_id,
            "delivery_id": e.delivery_id,
            "channel": e.channel,
            "event": e.event,
            "detail": {
                "provider": e.provider,
                "provider_message_id": e.provider_message_id,
                "error": e.error,
                "receipt": e.receipt,
                "occurred_at": _iso(e.occurred_at or now),
            },
            "state": CallbackState.PENDING.value,
            "attempts": 0,
            "created_at": now,
        }
        for e in events
        if e.event in wanted
    ]
    if rows:
        conn.execute(sa.insert(_C), rows)
    return len(rows)


def _iso(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclasses.dataclass(frozen=True, slots=True)
class PendingCallback:
    """A callback to post, with what its body says."""

    event_id: uuid.UUID
    attempts: int
    event: str
    created_at: dt.datetime
    data: dict[str, Any]


class CallbackOutbox:
    """The relay's and the sender's side of ``status_callbacks``; one transaction per call."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def claim_due(self, *, limit: int, lease_seconds: float) -> list[uuid.UUID]:
        """Pending callbacks not handed out, or whose lease ran out: leased again for
        ``lease_seconds`` and returned, oldest first (any number of schedulers may run)."""
        now = utcnow()
        due = (
            sa.select(_C.c.event_id)
            .where(
                _C.c.state == CallbackState.PENDING.value,
                sa.or_(_C.c.lease_expires_at.is_(None), _C.c.lease_expires_at <= now),
            )
            .order_by(_C.c.created_at)
            .limit(limit)
        )
        if self.engine.dialect.name == "postgresql":
            due = due.with_for_update(skip_locked=True)
        with self.engine.begin() as conn:
            ids = [row.event_id for row in conn.execute(due)]
            if ids:
                conn.execute(
                    sa.update(_C)
                    .where(_C.c.event_id.in_(ids))
                    .values(lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
                )
        return ids

    def load(self, event_id: uuid.UUID) -> PendingCallback | None:
        """The callback if it is still pending (None once sent or failed: a duplicate message)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(
                    _C,
                    _N.c.user_id,
                    _N.c.category,
                    _N.c.priority,
                    _N.c.auction_id,
                    _N.c.status.label("notification_status"),
                )
                .select_from(_C.join(_N, _N.c.notification_id == _C.c.notification_id))
                .where(_C.c.event_id == event_id, _C.c.state == CallbackState.PENDING.value)
            ).first()
        if row is None:
            return None
        detail = dict(row.detail or {})
        data: dict[str, Any] = {
            "event_id": str(row.event_id),
            "event": row.event,
            "notification_id": str(row.notification_id),
            "delivery_id": str(row.delivery_id),
            "channel": Channel(row.channel).value,
            "user_id": str(row.user_id),
            "category": _text(row.category),
            "priority": _text(row.priority),
            "auction_id": None if row.auction_id is None else str(row.auction_id),
            "notification_status": _text(row.notification_status),
            **detail,
        }
        return PendingCallback(row.event_id, row.attempts, row.event, row.created_at, data)

    def finish(
        self,
        event_id: uuid.UUID,
        state: CallbackState,
        *,
        error: str | None = None,
        retry_in: float | None = None,
        lease_seconds: float = 300.0,
    ) -> None:
        """Record one try: SENT or FAILED ends it; PENDING waits ``retry_in`` seconds
        (the lease covers the wait, so the relay does not hand it out meanwhile)."""
        now = utcnow()
        values: dict[str, Any] = {"attempts": _C.c.attempts + 1, "last_error": error}
        if state is CallbackState.PENDING:
            values["lease_expires_at"] = now + dt.timedelta(
                seconds=(retry_in or 0.0) + lease_seconds
            )
        else:
            values.update(state=state.value, finished_at=now, lease_expires_at=None)
        with self.engine.begin() as conn:
            conn.execute(
                sa.update(_C)
                .where(_C.c.event_id == event_id, _C.c.state == CallbackState.PENDING.value)
                .values(**values)
            )

    def rows(self, notification_ids: Sequence[uuid.UUID] | None = None) -> list[Any]:
        """Every row (of these notifications), oldest first: for operators and tests."""
        stmt = sa.select(_C).order_by(_C.c.created_at)
        if notification_ids is not None:
            stmt = stmt.where(_C.c.notification_id.in_(list(notification_ids)))
        with self.engine.connect() as conn:
            return list(conn.execute(stmt))


def _text(value: Any) -> Any:
    return getattr(value, "value", value)
