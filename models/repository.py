"""The repository: the only code that writes delivery state.

The scheduler claims, the workers move deliveries through their states, and
every write goes through here. Each public method runs in a transaction of its
own and commits before returning. Times come from the Python clock in UTC so
that the same statements run on PostgreSQL and on the embedded SQLite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import as_utc, utcnow
from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum_list
from models.enums import (
    Channel,
    DeliveryStatus,
    NotificationStatus,
    Priority,
)
from models.notifications import Delivery, Notification, UserAddress
from models.writeback import (
    IN_FLIGHT,
    AddressRow,
    AttemptRecord,
    NotificationChange,
    SendJob,
    WriteBack,
    lock_notifications,
    roll_up,
    roll_up_status,
    take_for_sending,
    write_back,
)

__all__ = [
    "AddressRow",
    "AttemptRecord",
    "Claim",
    "Repository",
    "SendJob",
    "WriteBack",
    "roll_up_status",
]

log = logging.getLogger("clarion.repository")


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """One delivery the scheduler handed to the broker."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    channel: Channel
    priority: Priority
    queue_name: str
    message_id: str


#: Builds the broker message for a claim: (delivery_id, queue_name) -> message_id.
MessageFactory = Callable[[uuid.UUID, str], str]

#: ``last_error`` of a delivery whose dead letter an operator purged.
PURGED = "purged"


class RequeueStep(enum.StrEnum):
    """What :meth:`Repository.requeue_dead_letter` found and did."""

    REQUEUED = "requeued"
    RESUMED = "resumed"  # committed by an earlier run; the broker half is left
    STALE = "stale"  # not dead-lettered any more
    MISSING = "missing"


class PurgeStep(enum.StrEnum):
    PURGED = "purged"
    STALE = "stale"
    MISSING = "missing"


class Repository:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    @property
    def postgres(self) -> bool:
        bind = self.sessions.kw.get("bind")
        return bind is not None and bind.dialect.name == "postgresql"

    # --- scheduler ----------------------------------------------------------------

    def cancel_expired(self, now: dt.datetime | None = None) -> int:
        """End every undispatched pending notification past its expiry as cancelled."""
        now = now or utcnow()
        with self.sessions.begin() as s:
            result = s.execute(
                sa.update(Notification)
                .where(
                    Notification.status == NotificationStatus.PENDING,
                    Notification.dispatched_at.is_(None),
                    Notification.expires_at <= now,
                )
                .values(
                    status=NotificationStatus.CANCELLED,
                    error_message="expired before it was sent",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def claim_due(
        self,
        *,
        batch_size: int,
        lease_seconds: float,
        queue_for: Callable[[Channel, Priority], str],
        make_message: MessageFactory,
        now: dt.datetime | None = None,
    ) -> list[Claim]:
        """Claim up to ``batch_size`` due notifications, most urgent then oldest first.

        Claimed rows get ``dispatched_at`` and one queued delivery per channel
        with a lease; the transaction commits before the caller enqueues, so a
        worker never sees a message whose delivery is not yet visible. Rows
        locked by another scheduler are skipped (``FOR UPDATE SKIP LOCKED``).
        A row whose ``delivery_channels`` is not a list of known channels is
        failed with an error naming the bad value; the rest of the batch goes on.
        """
        now = now or utcnow()
        lease = now + dt.timedelta(seconds=lease_seconds)
        n = Notification
        order = (
            [n.priority.desc(), n.created_at]
            if self.postgres
            else [_priority_rank(n.priority).desc(), n.created_at]
        )
        due = (
            sa.select(n.notification_id, n.priority, n.delivery_channels)
            .where(
                n.status == NotificationStatus.PENDING,
                n.dispatched_at.is_(None),
                sa.or_(n.scheduled_at.is_(None), n.scheduled_at <= now),
                sa.or_(n.expires_at.is_(None), n.expires_at > now),
            )
            .order_by(*order)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        claims: list[Claim] = []
        with self.sessions.begin() as s:
            rows = s.execute(due).all()
            if not rows:
                return []
            bad: dict[uuid.UUID, str] = {}
            deliveries: list[dict[str, Any]] = []
            for notification_id, priority, channels in rows:
                parsed, problem = _parse_channels(channels)
                if problem is not None:
                    bad[notification_id] = problem
                    continue
                for channel in parsed:
                    delivery_id = uuid.uuid4()
                    queue = queue_for(channel, Priority(priority))
                    message_id = make_message(delivery_id, queue)
                    claims.append(
                        Claim(delivery_id, notification_id, channel, priority, queue, message_id)
                    )
                    deliveries.append(
                        {
                            "delivery_id": delivery_id,
                            "notification_id": notification_id,
                            "channel": channel,
                            "status": DeliveryStatus.QUEUED,
                            "attempts": 0,
                            "throttles": 0,
                            "lease_expires_at": lease,
                            "queue_name": queue,
                            "message_id": message_id,
                            "queued_at": now,
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
            ok_ids = [r[0] for r in rows if r[0] not in bad]
            if ok_ids:
                s.execute(
                    sa.update(n)
                    .where(n.notification_id.in_(ok_ids))
                    .values(dispatched_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            if deliveries:
                s.execute(sa.insert(Delivery), deliveries)
            for notification_id, problem in bad.items():
                log.warning("notification %s cannot be delivered: %s", notification_id, problem)
                s.execute(
                    sa.update(n)
                    .where(n.notification_id == notification_id)
                    .values(
                        status=NotificationStatus.FAILED,
                        dispatched_at=now,
                        error_message=problem,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
        return claims

    def reclaim_expired_leases(
        self,
        *,
        batch_size: int,
        lease_seconds: float,
        make_message: MessageFactory,
        now: dt.datetime | None = None,
    ) -> list[Claim]:
        """Queue again the deliveries whose lease ran out with no outcome.

        A worker died mid-send or a message was lost: the delivery is still
        queued or sending after its lease. It is queued again with a new lease
        and a new message; if the old message does turn up, the redelivery
        guard drops whichever of the two comes second.
        """
        now = now or utcnow()
        lease = now + dt.timedelta(seconds=lease_seconds)
        d = Delivery
        stale = (
            sa.select(d.delivery_id, d.notification_id, d.channel, d.queue_name, d.status)
            .where(d.status.in_(IN_FLIGHT), d.lease_expires_at < now)
            .order_by(d.lease_expires_at)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        claims: list[Claim] = []
        with self.sessions.begin() as s:
            for delivery_id, notification_id, channel, queue_name, status in s.execute(stale).all():
                queue = queue_name or Channel(channel).value
                message_id = make_message(delivery_id, queue)
                log.warning(
                    "delivery %s of notification %s was %s past its lease; queueing it again",
                    delivery_id,
                    notification_id,
                    status,
                )
                s.execute(
                    sa.update(d)
                    .where(d.delivery_id == delivery_id)
                    .values(
                        status=DeliveryStatus.QUEUED,
                        lease_expires_at=lease,
                        message_id=message_id,
                        queued_at=now,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False)
                )
                claims.append(
                    Claim(
                        delivery_id,
                        notification_id,
                        Channel(channel),
                        Priority.NORMAL,
                        queue,
                        message_id,
                    )
                )
        return claims

    def next_due_at(self) -> dt.datetime | None:
        """When the earliest scheduled, still undispatched notification falls due."""
        n = Notification
        with self.sessions() as s:
            value = s.scalar(
                sa.select(sa.func.min(n.scheduled_at)).where(
                    n.status == NotificationStatus.PENDING, n.dispatched_at.is_(None)
                )
            )
        return as_utc(value)

    # --- workers ---------------------------------------------------------------------

    @property
    def engine(self) -> Any:
        return self.sessions.kw["bind"]

    def start_sending(self, delivery_id: uuid.UUID, *, lease_seconds: float) -> SendJob | None:
        """The redelivery guard: queued -> sending in one conditional UPDATE.

        Returns None when the delivery is not queued (already sent, being sent
        by another worker, failed, cancelled) or does not exist: the caller
        drops the message. A notification that expired or was cancelled while
        the delivery waited is cancelled here instead of being sent.
        """
        return self.start_sending_many([delivery_id], lease_seconds=lease_seconds)[delivery_id]

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        """:meth:`start_sending` for many deliveries in one transaction."""
        with self.engine.begin() as conn:
            return take_for_sending(conn, delivery_ids, lease_seconds=lease_seconds)

    def write_back(self, item: WriteBack) -> None:
        """Write one delivery's outcome (see :class:`~models.writeback.WriteBack`)."""
        self.write_back_many([item])

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        """Write many deliveries' outcomes in one transaction."""
        with self.engine.begin() as conn:
            write_back(conn, items)

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None:
        ids = list(address_ids)
        if not ids:
            return
        now = utcnow()
        with self.sessions.begin() as s:
            s.execute(
                sa.update(UserAddress)
                .where(UserAddress.address_id.in_(ids))
                .values(is_active=False, disabled_at=now, disabled_reason=reason, updated_at=now)
                .execution_options(synchronize_session=False)
            )

    # --- operators (clarion dlq) -----------------------------------------------------

    def requeue_dead_letter(
        self,
        delivery_id: uuid.UUID,
        *,
        message_id: str,
        queue_name: str,
        lease_seconds: float,
        now: dt.datetime | None = None,
    ) -> RequeueStep:
        """The database half of a requeue: a dead-lettered delivery becomes sendable again.

        In one transaction, only if the delivery is still ``failed`` with
        ``dead_lettered_at`` set: status ``queued``, ``attempts`` and
        ``throttles`` back to 0 (the notification's ``max_attempts`` applies
        afresh; ``delivery_attempts`` keeps every earlier attempt),
        ``dead_lettered_at`` and ``failed_at`` cleared, ``message_id`` the
        requeued copy's, a lease covering the wait for a worker (if the broker
        half never happens, the scheduler's lease sweep enqueues it), and the
        notification's status rolled up again (``failed`` -> ``pending``).

        Returns ``REQUEUED``; ``RESUMED`` when this very requeue was committed
        by an earlier, interrupted run (the row is queued with ``message_id``:
        only the broker half is left); ``STALE`` when the row is no longer
        dead-lettered (requeued already, purged); ``MISSING`` without a row.
        """
        now = now or utcnow()
        d = Delivery
        with self.sessions.begin() as s:
            row = s.execute(
                sa.select(d.notification_id).where(d.delivery_id == delivery_id)
            ).one_or_none()
            if row is None:
                return RequeueStep.MISSING
            self._lock_notification(s, row.notification_id)
            done = s.execute(
                sa.update(d)
                .where(
                    d.delivery_id == delivery_id,
                    d.status == DeliveryStatus.FAILED,
                    d.dead_lettered_at.is_not(None),
                )
                .values(
                    status=DeliveryStatus.QUEUED,
                    attempts=0,
                    throttles=0,
                    dead_lettered_at=None,
                    failed_at=None,
                    next_attempt_at=None,
                    message_id=message_id,
                    queue_name=queue_name,
                    queued_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(d.delivery_id)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if done is None:
                current = s.execute(
                    sa.select(d.status, d.message_id).where(d.delivery_id == delivery_id)
                ).one()
                if current.status == DeliveryStatus.QUEUED and current.message_id == message_id:
                    return RequeueStep.RESUMED
                return RequeueStep.STALE
            log.info("delivery %s requeued from the dead-letter queue", delivery_id)
            self._roll_up(s, row.notification_id, None, None, now, None, 0)
            return RequeueStep.REQUEUED

    def purge_dead_letter(
        self, delivery_id: uuid.UUID, *, now: dt.datetime | None = None
    ) -> PurgeStep:
        """The database half of a purge: the delivery stays failed, ``last_error``
        becomes "purged" (the original error stays in ``delivery_attempts``) and
        ``dead_lettered_at`` is cleared (it is in no dead-letter queue any more).

        Returns ``PURGED``, ``STALE`` (not dead-lettered any more) or ``MISSING``.
        """
        now = now or utcnow()
        d = Delivery
        with self.sessions.begin() as s:
            exists = s.scalar(sa.select(d.delivery_id).where(d.delivery_id == delivery_id))
            if exists is None:
                return PurgeStep.MISSING
            done = s.execute(
                sa.update(d)
                .where(
                    d.delivery_id == delivery_id,
                    d.status == DeliveryStatus.FAILED,
                    d.dead_lettered_at.is_not(None),
                )
                .values(last_error=PURGED, dead_lettered_at=None, updated_at=now)
                .returning(d.delivery_id)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if done is None:
                return PurgeStep.STALE
            log.info("delivery %s purged from the dead-letter queue", delivery_id)
            return PurgeStep.PURGED

    # --- real-time gateway -------------------------------------------------------------

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

    # --- internals ------------------------------------------------------------------

    def _lock_notification(self, s: Session, notification_id: uuid.UUID) -> None:
        lock_notifications(s.connection(), [notification_id])

    def _roll_up(
        self,
        s: Session,
        notification_id: uuid.UUID,
        channel: Channel | None,
        response: dict[str, Any] | None,
        now: dt.datetime,
        error: str | None,
        attempts_added: int,
    ) -> None:
        """Roll the notification's status up from its deliveries (see ``models.writeback``)."""
        change = NotificationChange(error=error, attempts_added=attempts_added)
        if channel is not None and response is not None:
            change.responses[channel.value] = response
        roll_up(s.connection(), {notification_id: change}, now)


def _status_literal(status: NotificationStatus) -> Any:
    # A CAST, not a bound enum: psycopg sends enum members as text.
    return sa.cast(sa.literal(status.value), Notification.__table__.c.status.type)


def _priority_rank(column: Any) -> Any:
    return sa.case({p.value: p.rank for p in Priority}, value=column, else_=0)


def _parse_channels(value: Any) -> tuple[list[Channel], str | None]:
    """A plain INSERT's ``delivery_channels``, or the problem that fails the row."""
    try:
        return as_enum_list(Channel, value, "delivery_channels"), None
    except ValidationError as exc:
        return [], str(exc)
