"""The repository: the only code that writes delivery state.

The scheduler claims, the workers move deliveries through their states, and
every write goes through here. Each public method runs in a transaction of its
own and commits before returning. Times come from the Python clock in UTC so
that the same statements run on PostgreSQL and on the embedded SQLite.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models.enums import (
    AttemptOutcome,
    Channel,
    DeliveryStatus,
    NotificationStatus,
    Priority,
)
from models.notifications import (
    Delivery,
    DeliveryAttempt,
    Notification,
    NotificationTemplate,
    UserAddress,
)

log = logging.getLogger("clarion.repository")

SENDABLE = (DeliveryStatus.QUEUED,)
IN_FLIGHT = (DeliveryStatus.QUEUED, DeliveryStatus.SENDING)
#: Notification statuses that delivery never overwrites (set by the user's client).
USER_STATUSES = (NotificationStatus.READ, NotificationStatus.CLICKED)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; everything Clarion stores is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True, slots=True)
class Claim:
    """One delivery the scheduler handed to the broker."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    channel: Channel
    priority: Priority
    queue_name: str
    message_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class AddressRow:
    address_id: uuid.UUID
    address: str
    secret: str | None = dataclasses.field(repr=False)


@dataclasses.dataclass(frozen=True, slots=True)
class SendJob:
    """What a worker needs to send one delivery, read when it took the delivery."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    user_id: uuid.UUID
    channel: Channel
    attempts: int
    throttles: int
    max_attempts: int
    title: str
    message: str
    html: bool
    action_url: str | None
    action_label: str | None
    category: str
    priority: str
    auction_id: uuid.UUID | None
    addresses: tuple[AddressRow, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    """The outcome of one provider call, to write back."""

    outcome: AttemptOutcome
    provider: str
    started_at: dt.datetime
    duration_ms: int
    response: dict[str, Any]
    request_id: str | None = None
    provider_message_id: str | None = None
    error: str | None = None


#: Builds the broker message for a claim: (delivery_id, queue_name) -> message_id.
MessageFactory = Callable[[uuid.UUID, str], str]


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

    def start_sending(self, delivery_id: uuid.UUID, *, lease_seconds: float) -> SendJob | None:
        """The redelivery guard: queued -> sending in one conditional UPDATE.

        Returns None when the delivery is not queued (already sent, being sent
        by another worker, failed, cancelled) or does not exist: the caller
        drops the message. A notification that expired or was cancelled while
        the delivery waited is cancelled here instead of being sent.
        """
        now = utcnow()
        d, n = Delivery, Notification
        with self.sessions.begin() as s:
            taken = s.execute(
                sa.update(d)
                .where(d.delivery_id == delivery_id, d.status.in_(SENDABLE))
                .values(
                    status=DeliveryStatus.SENDING,
                    lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(d.notification_id, d.channel, d.attempts, d.throttles)
                .execution_options(synchronize_session=False)
            ).one_or_none()
            if taken is None:
                return None
            notification_id, channel, attempts, throttles = taken
            row = s.execute(
                sa.select(
                    n.user_id,
                    n.status,
                    n.expires_at,
                    n.max_attempts,
                    n.title,
                    n.message,
                    n.action_url,
                    n.action_label,
                    n.category,
                    n.priority,
                    n.auction_id,
                    n.template_id,
                ).where(n.notification_id == notification_id)
            ).one()
            expires_at = as_utc(row.expires_at)
            if row.status == NotificationStatus.CANCELLED or (
                expires_at is not None and expires_at <= now
            ):
                reason = (
                    "notification was cancelled"
                    if row.status == NotificationStatus.CANCELLED
                    else "expired before it was sent"
                )
                self._finish(s, delivery_id, notification_id, DeliveryStatus.CANCELLED, now, reason)
                return None
            addresses: tuple[AddressRow, ...] = ()
            if Channel(channel) is not Channel.IN_APP:
                addresses = tuple(
                    AddressRow(a.address_id, a.address, a.secret)
                    for a in s.execute(
                        sa.select(UserAddress.address_id, UserAddress.address, UserAddress.secret)
                        .where(
                            UserAddress.user_id == row.user_id,
                            UserAddress.channel == channel,
                            UserAddress.is_active.is_(True),
                        )
                        .order_by(UserAddress.created_at.desc())
                    )
                )
            html = False
            if row.template_id is not None:
                fmt = s.scalar(
                    sa.select(NotificationTemplate.body_format).where(
                        NotificationTemplate.template_id == row.template_id
                    )
                )
                html = fmt == "html"
            return SendJob(
                delivery_id=delivery_id,
                notification_id=notification_id,
                user_id=row.user_id,
                channel=Channel(channel),
                attempts=attempts,
                throttles=throttles,
                max_attempts=row.max_attempts or 3,
                title=row.title,
                message=row.message,
                html=html,
                action_url=row.action_url,
                action_label=row.action_label,
                category=str(
                    row.category.value if hasattr(row.category, "value") else row.category
                ),
                priority=str(
                    row.priority.value if hasattr(row.priority, "value") else row.priority
                ),
                auction_id=row.auction_id,
                addresses=addresses,
            )

    def record_success(
        self, job: SendJob, attempts: Sequence[AttemptRecord], *, delivered: bool
    ) -> None:
        """Write back an accepted message: delivery sent or delivered, attempt history.

        ``attempts`` holds one record per provider call of this run (a push to
        several device tokens makes several); the first accepted one names the
        provider message.
        """
        attempt = next(a for a in attempts if a.outcome in _ACCEPTED)
        response = _combined_response(attempts)
        now = utcnow()
        status = DeliveryStatus.DELIVERED if delivered else DeliveryStatus.SENT
        with self.sessions.begin() as s:
            self._lock_notification(s, job.notification_id)
            values: dict[str, Any] = {
                "status": status,
                "attempts": Delivery.attempts + 1,
                "provider": attempt.provider,
                "provider_message_id": attempt.provider_message_id,
                "provider_response": response,
                "lease_expires_at": None,
                "next_attempt_at": None,
                "sent_at": now,
                "updated_at": now,
            }
            if delivered:
                values["delivered_at"] = now
            s.execute(
                sa.update(Delivery)
                .where(Delivery.delivery_id == job.delivery_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            for record in attempts:
                self._add_attempt(s, job, record, number=job.attempts + 1)
            self._roll_up(s, job.notification_id, job.channel, response, now, None, 1)

    def record_failure(
        self,
        job: SendJob,
        attempts: Sequence[AttemptRecord],
        *,
        final: bool,
        counts_attempt: bool = True,
        error: str,
        retry_at: dt.datetime | None = None,
        lease_seconds: float = 300.0,
        dead_letter: bool = False,
    ) -> None:
        """Write back a failed attempt (or a failure with no attempt, e.g. no address).

        ``final`` fails the delivery; otherwise it goes back to queued until
        ``retry_at`` with a lease that covers the wait. ``counts_attempt`` says
        whether this run burns one of the row's ``max_attempts`` (a throttle
        does not).
        """
        now = utcnow()
        counted = bool(attempts) and counts_attempt
        throttled = any(a.outcome is AttemptOutcome.THROTTLED for a in attempts)
        response = _combined_response(attempts) if attempts else None
        with self.sessions.begin() as s:
            self._lock_notification(s, job.notification_id)
            values: dict[str, Any] = {
                "attempts": Delivery.attempts + (1 if counted else 0),
                "throttles": Delivery.throttles + (1 if throttled else 0),
                "last_error": error,
                "updated_at": now,
            }
            if attempts:
                values["provider"] = attempts[-1].provider
                values["provider_response"] = response
            if final:
                values.update(
                    status=DeliveryStatus.FAILED,
                    failed_at=now,
                    lease_expires_at=None,
                    next_attempt_at=None,
                )
                if dead_letter:
                    values["dead_lettered_at"] = now
            else:
                wake = retry_at or now
                values.update(
                    status=DeliveryStatus.QUEUED,
                    next_attempt_at=wake,
                    lease_expires_at=wake + dt.timedelta(seconds=lease_seconds),
                )
            s.execute(
                sa.update(Delivery)
                .where(Delivery.delivery_id == job.delivery_id)
                .values(**values)
                .execution_options(synchronize_session=False)
            )
            for record in attempts:
                self._add_attempt(s, job, record, number=job.attempts + 1)
            self._roll_up(
                s,
                job.notification_id,
                job.channel,
                response,
                now,
                f"{job.channel.value}: {error}",
                1 if counted else 0,
            )

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

    # --- internals ------------------------------------------------------------------

    def _lock_notification(self, s: Session, notification_id: uuid.UUID) -> None:
        # Two channels of one notification may finish at once; the roll-up of
        # the notification's status must see both, so writers take turns.
        s.execute(
            sa.select(Notification.notification_id)
            .where(Notification.notification_id == notification_id)
            .with_for_update()
        )

    def _add_attempt(
        self, s: Session, job: SendJob, attempt: AttemptRecord, *, number: int
    ) -> None:
        s.execute(
            sa.insert(DeliveryAttempt).values(
                delivery_id=job.delivery_id,
                notification_id=job.notification_id,
                channel=job.channel,
                attempt_number=number,
                provider=attempt.provider,
                request_id=attempt.request_id or attempt.provider_message_id,
                outcome=attempt.outcome,
                error_message=attempt.error,
                response=attempt.response,
                started_at=attempt.started_at,
                duration_ms=attempt.duration_ms,
                created_at=utcnow(),
            )
        )

    def _finish(
        self,
        s: Session,
        delivery_id: uuid.UUID,
        notification_id: uuid.UUID,
        status: DeliveryStatus,
        now: dt.datetime,
        reason: str,
    ) -> None:
        s.execute(
            sa.update(Delivery)
            .where(Delivery.delivery_id == delivery_id)
            .values(status=status, last_error=reason, lease_expires_at=None, updated_at=now)
            .execution_options(synchronize_session=False)
        )
        self._roll_up(s, notification_id, None, None, now, reason, 0)

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
        """Recompute the notification's status from its deliveries (the documented rule).

        * delivered - at least one channel delivered;
        * sent      - none delivered, at least one accepted by its provider;
        * failed    - every channel failed or was cancelled, at least one failed;
        * cancelled - every channel was cancelled;
        * pending   - otherwise (channels still in flight).
        read and clicked, set by the user's client, are never overwritten.
        """
        statuses = [
            DeliveryStatus(v)
            for v in s.scalars(
                sa.select(Delivery.status).where(Delivery.notification_id == notification_id)
            )
        ]
        new_status = roll_up_status(statuses)
        row = s.execute(
            sa.select(
                Notification.status,
                Notification.provider_response,
                Notification.sent_at,
                Notification.delivered_at,
            ).where(Notification.notification_id == notification_id)
        ).one()
        values: dict[str, Any] = {"updated_at": now}
        if row.status not in USER_STATUSES:
            values["status"] = new_status
        if (
            new_status in (NotificationStatus.SENT, NotificationStatus.DELIVERED)
            and row.sent_at is None
        ):
            values["sent_at"] = now
        if new_status is NotificationStatus.DELIVERED and row.delivered_at is None:
            values["delivered_at"] = now
        if channel is not None and response is not None:
            merged = dict(row.provider_response or {})
            merged[channel.value] = response
            values["provider_response"] = merged
        if error is not None:
            values["error_message"] = error
        if attempts_added:
            values["delivery_attempts"] = sa.func.coalesce(Notification.delivery_attempts, 0) + (
                attempts_added
            )
        s.execute(
            sa.update(Notification)
            .where(Notification.notification_id == notification_id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )


_ACCEPTED = (AttemptOutcome.SENT, AttemptOutcome.DELIVERED)


def _combined_response(attempts: Sequence[AttemptRecord]) -> dict[str, Any]:
    """The provider response to store: the one answer, or each answer in order."""
    if len(attempts) == 1:
        return attempts[0].response
    return {"results": [a.response for a in attempts]}


def roll_up_status(statuses: Sequence[DeliveryStatus]) -> NotificationStatus:
    """The notification status for the given delivery statuses (see ``_roll_up``)."""
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


def _priority_rank(column: Any) -> Any:
    return sa.case({p.value: p.rank for p in Priority}, value=column, else_=0)


def _parse_channels(value: Any) -> tuple[list[Channel], str | None]:
    if not isinstance(value, list) or not value:
        return [], f"delivery_channels must be a non-empty JSON list of channels, got {value!r}"
    chosen: list[Channel] = []
    for item in value:
        try:
            channel = Channel(item)
        except ValueError:
            allowed = ", ".join(c.value for c in Channel)
            return [], f"delivery_channels: unknown channel {item!r}; expected one of {allowed}"
        if channel not in chosen:
            chosen.append(channel)
    return chosen, None
