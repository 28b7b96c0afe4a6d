"""The user's inbox: what the real-time gateway learns from connected clients.

A WebSocket client that received an in-app notification, read it or clicked
it reports so; these are the only writes of ``delivered_at`` by receipt and of
``read_at`` / ``clicked_at`` / ``is_read``. Each method runs in a transaction
of its own and commits before returning.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import utcnow
from models.enums import IN_FLIGHT, Channel, DeliveryStatus, NotificationStatus
from models.notifications import Delivery, Notification

__all__ = ["Inbox"]


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


def _status_literal(status: NotificationStatus) -> Any:
    # A CAST, not a bound enum: psycopg sends enum members as text.
    return sa.cast(sa.literal(status.value), Notification.__table__.c.status.type)
