"""A notification's status, rolled up from its deliveries: the rule and its write.

Every writer that changes a delivery's status (the workers' write-back, the
redelivery guard cancelling an expired delivery, an operator's requeue) ends
by rolling up the notifications it touched, here, in its own transaction. The
rule itself is a pure function (:func:`roll_up_status`) so that the README's
table is tested without a database.

Lock order, to stay free of deadlocks between concurrent writers: the
notifications are locked in ``notification_id`` order (:func:`lock_notifications`)
before their deliveries are read; the workers' batches lock them before they
touch the deliveries at all.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from models import arrays
from models.enums import IN_FLIGHT, DeliveryStatus, NotificationStatus
from models.notifications import Delivery, Notification

__all__ = [
    "USER_STATUSES",
    "NotificationChange",
    "error_message",
    "lock_notifications",
    "roll_up",
    "roll_up_status",
]

_D: sa.Table = Delivery.__table__  # type: ignore[assignment]
_N: sa.Table = Notification.__table__  # type: ignore[assignment]

# Built once, with expanding IN parameters: they run on the workers' hot path,
# where building them per batch cost more CPU than running them.
_LOCK = (
    sa.select(
        _N.c.notification_id,
        _N.c.status,
        _N.c.provider_response,
        _N.c.sent_at,
        _N.c.delivered_at,
        _N.c.error_message,
        _N.c.delivery_attempts,
    )
    .where(_N.c.notification_id.in_(sa.bindparam("ids", expanding=True)))
    .order_by(_N.c.notification_id)
    .with_for_update()
)
_STATUSES = sa.select(_D.c.notification_id, _D.c.status).where(
    _D.c.notification_id.in_(sa.bindparam("ids", expanding=True))
)
_NOTIFICATION_COLUMNS = (
    "status",
    "sent_at",
    "delivered_at",
    "provider_response",
    "error_message",
    "delivery_attempts",
    "updated_at",
)
_WRITE_NOTIFICATION = (
    sa.update(_N)
    .where(_N.c.notification_id == sa.bindparam("b_notification_id"))
    .values({c: sa.bindparam(f"b_{c}") for c in _NOTIFICATION_COLUMNS})
)

#: Notification statuses that delivery never overwrites (set by the user's client).
USER_STATUSES = (NotificationStatus.READ, NotificationStatus.CLICKED)


@dataclasses.dataclass
class NotificationChange:
    """What one write adds to one notification before its status is rolled up."""

    responses: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: str | None = None
    attempts_added: int = 0
    #: Channels that succeeded in this write: an earlier error of theirs is stale.
    recovered: set[str] = dataclasses.field(default_factory=set)


def roll_up_status(statuses: Sequence[DeliveryStatus]) -> NotificationStatus:
    """The notification status for the given delivery statuses, first rule that holds:

    * delivered - at least one channel delivered;
    * sent      - none delivered, at least one accepted by its provider;
    * pending   - a channel still queued or sending (or no delivery yet);
    * failed    - every channel failed or was cancelled, at least one failed;
    * cancelled - every channel was cancelled.
    """
    if not statuses:
        return NotificationStatus.PENDING
    if DeliveryStatus.DELIVERED in statuses:
        return NotificationStatus.DELIVERED
    if DeliveryStatus.SENT in statuses:
        return NotificationStatus.SENT
    if any(st in IN_FLIGHT for st in statuses):
        return NotificationStatus.PENDING
    if DeliveryStatus.FAILED in statuses:
        return NotificationStatus.FAILED
    return NotificationStatus.CANCELLED


def error_message(current: str | None, change: NotificationChange) -> str | None:
    """The notification's ``error_message`` after ``change``: the last error,
    prefixed with its channel; cleared when that channel has since succeeded
    (a retried SMS that went through is no error)."""
    if change.error is not None:
        return change.error
    if current is not None and any(current.startswith(f"{c}: ") for c in change.recovered):
        return None
    return current


def lock_notifications(
    conn: Connection, notification_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, Any]:
    """Lock the notifications (in id order) and read what the roll-up needs.

    Two channels of one notification may finish at once; the roll-up must see
    both, so writers take turns on the notification row.
    """
    rows = conn.execute(_LOCK, {"ids": sorted(set(notification_ids))})
    return {row.notification_id: row for row in rows}


def roll_up(
    conn: Connection,
    changes: Mapping[uuid.UUID, NotificationChange],
    *,
    now: dt.datetime,
    notes: Mapping[uuid.UUID, Any] | None = None,
) -> None:
    """Recompute each notification's status from its deliveries (:func:`roll_up_status`).

    read and clicked, set by the user's client, are never overwritten.
    ``sent_at``/``delivered_at`` keep the first channel's time; provider
    responses are merged under each channel's name. ``notes`` are the rows
    :func:`lock_notifications` returned, when the caller locked them already.
    """
    if not changes:
        return
    if notes is None:
        notes = lock_notifications(conn, changes)
    # Read after the lock (a new statement, a new snapshot): the other
    # channels' outcomes committed while this transaction waited are seen.
    statuses: dict[uuid.UUID, list[DeliveryStatus]] = defaultdict(list)
    for notification_id, status in conn.execute(_STATUSES, {"ids": list(changes)}):
        statuses[notification_id].append(DeliveryStatus(status))
    params = []
    for notification_id, change in changes.items():
        row = notes.get(notification_id)
        if row is None:
            continue
        new_status = roll_up_status(statuses[notification_id])
        status = row.status if row.status in USER_STATUSES else new_status
        reached = new_status in (NotificationStatus.SENT, NotificationStatus.DELIVERED)
        responses = row.provider_response
        if change.responses:
            responses = {**(row.provider_response or {}), **change.responses}
        params.append(
            {
                "b_notification_id": notification_id,
                "b_status": status,
                "b_sent_at": row.sent_at or (now if reached else None),
                "b_delivered_at": row.delivered_at
                or (now if new_status is NotificationStatus.DELIVERED else None),
                "b_provider_response": responses,
                "b_error_message": error_message(row.error_message, change),
                "b_delivery_attempts": (row.delivery_attempts or 0) + change.attempts_added,
                "b_updated_at": now,
            }
        )
    if params and arrays.supported(conn):
        arrays.update_rows(
            conn,
            _N,
            [{k[2:]: v for k, v in p.items()} for p in params],
            match=("notification_id",),
            assign=_NOTIFICATION_COLUMNS,
        )
    elif params:
        conn.execute(_WRITE_NOTIFICATION, params)
