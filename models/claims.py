"""The scheduler's claims: due notifications become queued deliveries.

The only code that dispatches a notification (``dispatched_at``) and creates
its delivery rows, that ends an expired, never-dispatched notification, and
that requeues a delivery whose lease ran out. Each method runs in a
transaction of its own and commits before returning, so a worker never sees a
message whose delivery is not yet visible. Times come from the Python clock in
UTC so that the same statements run on PostgreSQL and on the embedded SQLite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import as_utc, utcnow
from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum_list
from models import arrays
from models.enums import IN_FLIGHT, Category, Channel, DeliveryStatus, NotificationStatus, Priority
from models.notifications import Delivery, Notification
from models.policy import Action, ChannelDecision, PolicyConfig
from models.policy_state import (
    Due,
    FollowUpRenderer,
    WatchingSource,
    plain_follow_ups,
    plan_batch,
)

__all__ = ["Claim", "ClaimBatch", "Claims", "MessageFactory"]

log = logging.getLogger("clarion.claims")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """One delivery the scheduler handed to the broker."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    channel: Channel
    priority: Priority
    queue_name: str
    message_id: str


class ClaimBatch(list[Claim]):
    """The claims of one batch, and how many notifications it took.

    With the delivery policy a claimed notification may enqueue nothing (all
    its channels held, skipped or folded): the scheduler goes on claiming
    while ``notifications`` fills the batch, whatever the number of claims.
    """

    notifications: int = 0


#: Builds the broker message for a claim: (delivery_id, queue_name) -> message_id.
MessageFactory = Callable[[uuid.UUID, str], str]


class Claims:
    """The scheduler's queries of ``notifications`` and ``notification_deliveries``."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        policy: PolicyConfig | None = None,
        follow_ups: FollowUpRenderer = plain_follow_ups,
        presence: WatchingSource | None = None,
    ) -> None:
        self.sessions = sessions
        #: The delivery policy applied at each claim; None: every channel goes as asked.
        self.policy = policy
        #: Writes a collapse follow-up's texts and email (the top layer's renderer).
        self.follow_ups = follow_ups
        #: The gateways' live presence; None, or no answer: the connection rows.
        self.presence = presence

    @property
    def postgres(self) -> bool:
        bind = self.sessions.kw.get("bind")
        return bind is not None and bind.dialect.name == "postgresql"

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
    ) -> ClaimBatch:
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
            sa.select(
                n.notification_id,
                n.priority,
                n.delivery_channels,
                n.user_id,
                n.category,
                n.auction_id,
                n.template_id,
            )
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
        claims = ClaimBatch()
        with self.sessions.begin() as s:
            rows = s.execute(due).all()
            if not rows:
                return claims
            claims.notifications = len(rows)
            bad: dict[uuid.UUID, str] = {}
            good: list[Due] = []
            for row in rows:
                parsed, problem = _parse_channels(row.delivery_channels)
                if problem is not None:
                    bad[row.notification_id] = problem
                    continue
                good.append(
                    Due(
                        notification_id=row.notification_id,
                        user_id=row.user_id,
                        channels=tuple(parsed),
                        category=Category(row.category),
                        priority=Priority(row.priority),
                        auction_id=row.auction_id,
                        template_id=row.template_id,
                    )
                )
            plans = (
                plan_batch(
                    s,
                    good,
                    self.policy,
                    now,
                    follow_ups=self.follow_ups,
                    presence=self.presence,
                )
                if self.policy is not None
                else {}
            )
            deliveries: list[dict[str, Any]] = []
            ended: dict[uuid.UUID, str] = {}
            for item in good:
                plan = plans.get(item.notification_id)
                steps = (
                    plan.deliveries
                    if plan is not None
                    else tuple(ChannelDecision(c, Action.SEND) for c in item.channels)
                )
                for step in steps:
                    channel = step.channel
                    delivery_id = uuid.uuid4()
                    queue = queue_for(channel, item.priority)
                    row_values: dict[str, Any] = {
                        "delivery_id": delivery_id,
                        "notification_id": item.notification_id,
                        "channel": channel,
                        "status": DeliveryStatus.QUEUED,
                        "attempts": 0,
                        "throttles": 0,
                        "lease_expires_at": None,
                        "queue_name": queue,
                        "message_id": None,
                        "queued_at": now,
                        "held_until": None,
                        "policy_reason": step.reason,
                        "folded_into": step.folded_into,
                        "created_at": now,
                        "updated_at": now,
                    }
                    if step.action is Action.SEND:
                        message_id = make_message(delivery_id, queue)
                        row_values["lease_expires_at"] = lease
                        row_values["message_id"] = message_id
                        claims.append(
                            Claim(
                                delivery_id=delivery_id,
                                notification_id=item.notification_id,
                                channel=channel,
                                priority=item.priority,
                                queue_name=queue,
                                message_id=message_id,
                            )
                        )
                    elif step.action is Action.HOLD:
                        # No message yet: release_held enqueues it when it is due.
                        row_values["held_until"] = step.held_until
                    else:
                        row_values["status"] = DeliveryStatus.CANCELLED
                        row_values["queued_at"] = None
                    deliveries.append(row_values)
                if plan is not None and plan.cancelled is not None:
                    ended[item.notification_id] = plan.cancelled
            ok_ids = [r[0] for r in rows if r[0] not in bad and r[0] not in ended]
            if ok_ids:
                s.execute(
                    sa.update(n)
                    .where(n.notification_id.in_(ok_ids))
                    .values(dispatched_at=now, updated_at=now)
                    .execution_options(synchronize_session=False)
                )
            if deliveries and arrays.supported(s.connection()):
                # One statement for the claim's deliveries, not one per row.
                arrays.insert_rows(s.connection(), Delivery.__table__, deliveries)  # type: ignore[arg-type]
            elif deliveries:
                s.execute(sa.insert(Delivery), deliveries)
            for notification_id, reason in ended.items():
                log.info(
                    "notification %s cancelled by the delivery policy: %s", notification_id, reason
                )
            if ended:
                table: sa.Table = Notification.__table__  # type: ignore[assignment]
                s.execute(
                    sa.update(table)
                    .where(table.c.notification_id == sa.bindparam("b_id"))
                    .values(
                        status=NotificationStatus.CANCELLED,
                        dispatched_at=now,
                        error_message=sa.bindparam("b_reason"),
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False),
                    [{"b_id": k, "b_reason": v} for k, v in ended.items()],
                )
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

    def release_held(
        self,
        *,
        batch_size: int,
        lease_seconds: float,
        make_message: MessageFactory,
        now: dt.datetime | None = None,
    ) -> list[Claim]:
        """Queue the deliveries the policy held whose time has come.

        A held delivery is ``queued`` with ``held_until`` and no message.
        Its time come, it gets a lease and a message, and ``held_until`` is
        cleared (``policy_reason`` keeps why it waited). Rows locked by another
        scheduler are skipped; a delivery cancelled meanwhile is not queued.
        """
        now = now or utcnow()
        lease = now + dt.timedelta(seconds=lease_seconds)
        d = Delivery
        due = (
            sa.select(d.delivery_id, d.notification_id, d.channel, d.queue_name)
            .where(
                d.held_until.is_not(None),
                d.held_until <= now,
                d.status == DeliveryStatus.QUEUED,
            )
            .order_by(d.held_until)
            .limit(batch_size)
            .with_for_update(skip_locked=True)
        )
        claims: list[Claim] = []
        with self.sessions.begin() as s:
            params = []
            for delivery_id, notification_id, channel, queue_name in s.execute(due).all():
                queue = queue_name or Channel(channel).value
                message_id = make_message(delivery_id, queue)
                params.append({"b_id": delivery_id, "b_message": message_id})
                claims.append(
                    Claim(
                        delivery_id=delivery_id,
                        notification_id=notification_id,
                        channel=Channel(channel),
                        priority=Priority.NORMAL,
                        queue_name=queue,
                        message_id=message_id,
                    )
                )
            if params:
                deliveries_table: sa.Table = Delivery.__table__  # type: ignore[assignment]
                s.execute(
                    sa.update(deliveries_table)
                    .where(deliveries_table.c.delivery_id == sa.bindparam("b_id"))
                    .values(
                        held_until=None,
                        lease_expires_at=lease,
                        message_id=sa.bindparam("b_message"),
                        queued_at=now,
                        updated_at=now,
                    )
                    .execution_options(synchronize_session=False),
                    params,
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
                        delivery_id=delivery_id,
                        notification_id=notification_id,
                        channel=Channel(channel),
                        priority=Priority.NORMAL,
                        queue_name=queue,
                        message_id=message_id,
                    )
                )
        return claims

    def next_due_at(self) -> dt.datetime | None:
        """When the earliest scheduled, still undispatched notification, or the
        earliest held delivery, falls due."""
        n, d = Notification, Delivery
        with self.sessions() as s:
            value = as_utc(
                s.scalar(
                    sa.select(sa.func.min(n.scheduled_at)).where(
                        n.status == NotificationStatus.PENDING, n.dispatched_at.is_(None)
                    )
                )
            )
            held = as_utc(
                s.scalar(
                    sa.select(sa.func.min(d.held_until)).where(
                        d.held_until.is_not(None), d.status == DeliveryStatus.QUEUED
                    )
                )
            )
        if value is None or (held is not None and held < value):
            return held
        return value


def _priority_rank(column: Any) -> Any:
    return sa.case({p.value: p.rank for p in Priority}, value=column, else_=0)


def _parse_channels(value: Any) -> tuple[list[Channel], str | None]:
    """A plain INSERT's ``delivery_channels``, or the problem that fails the row."""
    try:
        return as_enum_list(Channel, value, "delivery_channels"), None
    except ValidationError as exc:
        return [], str(exc)
