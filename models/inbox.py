"""The user's inbox: what the real-time gateway and the inbox API learn from clients.

A WebSocket client that received an in-app notification, read it or clicked
it reports so, and so does an app through ``clarion web``'s inbox API (which
also archives and marks everything read); these are the only writes of
``delivered_at`` by receipt and of ``read_at`` / ``clicked_at`` / ``is_read``
/ ``is_archived``. Each method runs in a transaction of its own and commits
before returning.

The inbox of a user is their notifications that go through the in-app
channel, are due (not scheduled ahead) and not cancelled; archived ones are
left out unless asked for.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import utcnow
from models.enums import IN_FLIGHT, Category, Channel, DeliveryStatus, NotificationStatus
from models.notifications import Delivery, Notification

__all__ = ["Inbox", "InboxFilter", "InboxPage"]


@dataclasses.dataclass(frozen=True, slots=True)
class InboxFilter:
    unread: bool = False
    category: Category | None = None
    auction_id: uuid.UUID | None = None
    archived: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class InboxPage:
    rows: list[Notification]
    #: (created_at, notification_id) of the last row when more may follow.
    next_after: tuple[dt.datetime, uuid.UUID] | None


def _in_app(bind_dialect: str) -> Any:
    n = Notification
    if bind_dialect == "postgresql":
        return n.delivery_channels.op("@>")(sa.cast(sa.literal('["in_app"]'), JSONB))
    return sa.cast(n.delivery_channels, sa.Text).like('%"in_app"%')


class Inbox:
    """Receipts, reads and clicks reported by the user's clients."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def mark_in_app_received(
        self, received: Sequence[tuple[uuid.UUID, uuid.UUID, dt.datetime]]
    ) -> int:
        """Record that WebSocket connections received in-app notifications.

        ``received`` holds ``(notification_id, user_id, received_at)``; an entry
        whose notification does not belong to that user is ignored. Sets
        ``delivered_at`` (first receipt wins) and moves a pending or sent
        notification, and its in-app delivery, to delivered; read and clicked
        stay. Returns how many notifications changed.
        """
        if not received:
            return 0
        n, d = Notification, Delivery
        changed = 0
        with self.sessions.begin() as s:
            for notification_id, user_id, now in sorted(set(received)):
                result = s.execute(
                    sa.update(n)
                    .where(
                        n.notification_id == notification_id,
                        n.user_id == user_id,
                        n.delivered_at.is_(None),
                    )
                    .values(
                        delivered_at=now,
                        status=sa.case(
                            (
                                n.status.in_([NotificationStatus.PENDING, NotificationStatus.SENT]),
                                _status_literal(NotificationStatus.DELIVERED),
                            ),
                            else_=n.status,
                        ),
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                changed += int(result.rowcount or 0)  # type: ignore[attr-defined]
                s.execute(
                    sa.update(d)
                    .where(
                        d.notification_id == notification_id,
                        d.channel == Channel.IN_APP,
                        d.status.in_([DeliveryStatus.SENT, *IN_FLIGHT]),
                    )
                    .values(status=DeliveryStatus.DELIVERED, delivered_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
        return changed

    def mark_user_action(
        self,
        notification_id: uuid.UUID,
        user_id: uuid.UUID,
        *,
        clicked: bool,
        at: dt.datetime | None = None,
    ) -> bool:
        """A read (or click) report from the user's client; False if not the owner's.

        Read sets ``read_at`` (first report wins), ``is_read`` and status read
        unless already clicked; click also sets ``clicked_at`` and status clicked.
        """
        now = at or utcnow()
        n = Notification
        values: dict[str, Any] = {
            "read_at": sa.func.coalesce(n.read_at, now),
            "is_read": True,
            "updated_at": now,
        }
        if clicked:
            values["clicked_at"] = sa.func.coalesce(n.clicked_at, now)
            values["status"] = NotificationStatus.CLICKED
        else:
            values["status"] = sa.case(
                (
                    n.status == NotificationStatus.CLICKED,
                    _status_literal(NotificationStatus.CLICKED),
                ),
                else_=_status_literal(NotificationStatus.READ),
            )
        with self.sessions.begin() as s:
            result = s.execute(
                sa.update(n)
                .where(n.notification_id == notification_id, n.user_id == user_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]

    # --- the inbox API ------------------------------------------------------------------

    def _visible(self, s: Session, user_id: uuid.UUID, *, archived: bool = False) -> Any:
        n = Notification
        now = utcnow()
        return sa.and_(
            n.user_id == user_id,
            _in_app(s.get_bind().dialect.name),
            n.status != NotificationStatus.CANCELLED,
            sa.or_(n.scheduled_at.is_(None), n.scheduled_at <= now),
            n.is_archived.is_(True)
            if archived
            else sa.not_(sa.func.coalesce(n.is_archived, False)),
        )

    def page(
        self,
        user_id: uuid.UUID,
        filters: InboxFilter,
        *,
        limit: int,
        after: tuple[dt.datetime, uuid.UUID] | None = None,
    ) -> InboxPage:
        """The user's inbox, newest first, ``limit`` rows after the cursor ``after``."""
        n = Notification
        with self.sessions() as s:
            query = sa.select(n).where(self._visible(s, user_id, archived=filters.archived))
            if filters.unread:
                query = query.where(n.is_read.is_not(True))
            if filters.category is not None:
                query = query.where(n.category == filters.category)
            if filters.auction_id is not None:
                query = query.where(n.auction_id == filters.auction_id)
            if after is not None:
                created, nid = after
                query = query.where(
                    sa.or_(
                        n.created_at < created,
                        sa.and_(n.created_at == created, n.notification_id < nid),
                    )
                )
            rows = list(
                s.scalars(
                    query.order_by(n.created_at.desc(), n.notification_id.desc()).limit(limit + 1)
                )
            )
            s.expunge_all()
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if more and rows else None
        return InboxPage(rows, (last.created_at, last.notification_id) if last else None)

    def unread_count(self, user_id: uuid.UUID) -> int:
        """The badge: unread notifications in the user's inbox (archived ones excluded)."""
        n = Notification
        with self.sessions() as s:
            return int(
                s.scalar(
                    sa.select(sa.func.count())
                    .select_from(n)
                    .where(self._visible(s, user_id), n.is_read.is_not(True))
                )
                or 0
            )

    def owner(self, notification_id: uuid.UUID) -> uuid.UUID | None:
        """The user the notification belongs to; None when there is no such notification."""
        n = Notification
        with self.sessions() as s:
            found: uuid.UUID | None = s.scalar(
                sa.select(n.user_id).where(n.notification_id == notification_id)
            )
            return found

    def mark_all_read(self, user_id: uuid.UUID, *, at: dt.datetime | None = None) -> int:
        """Mark every unread notification of the user's inbox read; returns how many."""
        now = at or utcnow()
        n = Notification
        with self.sessions.begin() as s:
            ids = list(
                s.scalars(
                    sa.select(n.notification_id).where(
                        self._visible(s, user_id), n.is_read.is_not(True)
                    )
                )
            )
            if not ids:
                return 0
            result = s.execute(
                sa.update(n)
                .where(n.notification_id.in_(ids), n.user_id == user_id)
                .values(
                    read_at=sa.func.coalesce(n.read_at, now),
                    is_read=True,
                    updated_at=now,
                    status=sa.case(
                        (
                            n.status == NotificationStatus.CLICKED,
                            _status_literal(NotificationStatus.CLICKED),
                        ),
                        else_=_status_literal(NotificationStatus.READ),
                    ),
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def archive(
        self, notification_id: uuid.UUID, user_id: uuid.UUID, *, at: dt.datetime | None = None
    ) -> bool:
        """Archive one of the user's notifications; False if it is not theirs."""
        n = Notification
        with self.sessions.begin() as s:
            result = s.execute(
                sa.update(n)
                .where(n.notification_id == notification_id, n.user_id == user_id)
                .values(is_archived=True, updated_at=at or utcnow())
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]


def _status_literal(status: NotificationStatus) -> Any:
    # A CAST, not a bound enum: psycopg sends enum members as text.
    return sa.cast(sa.literal(status.value), Notification.__table__.c.status.type)
