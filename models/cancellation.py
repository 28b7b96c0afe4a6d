"""Cancelling what has not been handed to a provider yet (``clarion.cancel``).

The only code that cancels on the application's request. A notification
still waiting for its claim ends ``cancelled``; one already claimed has every
delivery still ``queued`` (waiting for a worker, for a retry, or held by the
delivery policy) cancelled, and its status rolled up. A delivery ``sending``
or past it has reached a provider and is left alone: a message is never
recalled. A worker holding the message of a cancelled delivery drops it (the
redelivery guard takes only ``queued`` rows).

Lock order, as every writer of deliveries: the notifications first, in id
order (:func:`models.rollup.lock_notifications`), then the collapse windows,
then the deliveries. A collapse window whose follow-up was cancelled is
removed, so that the next notification opens a new one instead of folding
into a follow-up that will never go out.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models.enums import DeliveryStatus, NotificationStatus
from models.notifications import Delivery, Notification
from models.preferences import CollapseWindow
from models.rollup import NotificationChange, lock_notifications, roll_up

__all__ = ["CancelFilter", "Cancelled", "cancel_pending"]

_D: sa.Table = Delivery.__table__  # type: ignore[assignment]
_N: sa.Table = Notification.__table__  # type: ignore[assignment]
_W: sa.Table = CollapseWindow.__table__  # type: ignore[assignment]


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class CancelFilter:
    user_id: uuid.UUID | None = None
    auction_id: uuid.UUID | None = None
    #: the template's rows (one per locale): a notification rendered from any of them
    template_ids: tuple[uuid.UUID, ...] | None = None
    cancellation_key: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Cancelled:
    """What one cancel did."""

    notifications: int  # notifications that had something cancelled
    deliveries: int  # deliveries cancelled (queued or held)
    not_recalled: int  # deliveries already handed to a provider (or being handed)


def cancel_pending(
    conn: Connection, which: CancelFilter, reason: str, now: dt.datetime
) -> Cancelled:
    """Cancel the pending notifications ``which`` selects (see the module)."""
    where = []
    if which.user_id is not None:
        where.append(_N.c.user_id == which.user_id)
    if which.auction_id is not None:
        where.append(_N.c.auction_id == which.auction_id)
    if which.template_ids is not None:
        where.append(_N.c.template_id.in_(which.template_ids))
    if which.cancellation_key is not None:
        where.append(_N.c.cancellation_key == which.cancellation_key)
    # Pending, or past pending with a channel still waiting (an in-app
    # delivered while the email is held for quiet hours).
    waiting = sa.select(_D.c.notification_id).where(_D.c.status == DeliveryStatus.QUEUED)
    ids = list(
        conn.execute(
            sa.select(_N.c.notification_id).where(
                *where,
                sa.or_(
                    _N.c.status == NotificationStatus.PENDING,
                    _N.c.notification_id.in_(waiting),
                ),
            )
        ).scalars()
    )
    if not ids:
        return Cancelled(0, 0, 0)
    notes = lock_notifications(conn, ids)
    pending = list(notes)
    undispatched = list(
        conn.execute(
            sa.update(_N)
            .where(
                _N.c.notification_id.in_(pending),
                _N.c.status == NotificationStatus.PENDING,
                _N.c.dispatched_at.is_(None),
            )
            .values(status=NotificationStatus.CANCELLED, error_message=reason, updated_at=now)
            .returning(_N.c.notification_id)
        ).scalars()
    )
    dispatched = [i for i in pending if i not in set(undispatched)]
    cancelled_deliveries: list[uuid.UUID] = []
    not_recalled = 0
    if dispatched:
        conn.execute(sa.delete(_W).where(_W.c.carrier_notification_id.in_(dispatched)))
        cancelled_deliveries = list(
            conn.execute(
                sa.update(_D)
                .where(
                    _D.c.notification_id.in_(dispatched),
                    _D.c.status == DeliveryStatus.QUEUED,
                )
                .values(
                    status=DeliveryStatus.CANCELLED,
                    held_until=None,
                    lease_expires_at=None,
                    policy_reason=reason,
                    updated_at=now,
                )
                .returning(_D.c.notification_id)
            ).scalars()
        )
        not_recalled = int(
            conn.scalar(
                sa.select(sa.func.count())
                .select_from(_D)
                .where(
                    _D.c.notification_id.in_(dispatched),
                    _D.c.status == DeliveryStatus.SENDING,
                )
            )
            or 0
        )
        touched = set(cancelled_deliveries)
        roll_up(
            conn,
            {i: NotificationChange() for i in touched},
            now=now,
            notes={i: notes[i] for i in touched},
        )
        # A notification left with every channel cancelled says why.
        conn.execute(
            sa.update(_N)
            .where(
                _N.c.notification_id.in_(touched),
                _N.c.status == NotificationStatus.CANCELLED,
                _N.c.error_message.is_(None),
            )
            .values(error_message=reason)
        )
    affected = len(undispatched) + len(set(cancelled_deliveries))
    return Cancelled(affected, len(cancelled_deliveries), not_recalled)
