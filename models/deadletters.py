"""Dead letters, the database half: an operator requeues or purges a delivery.

``clarion dlq`` pairs each of these with a broker step (``clarion.operators.dlq``,
whose ``DeadLetters`` is the broker side); the database half comes first and is idempotent,
so an interrupted run can be resumed. Each method runs in a transaction of its
own and commits before returning.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import uuid

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import utcnow
from models.enums import DeliveryStatus
from models.notifications import Delivery
from models.rollup import NotificationChange, lock_notifications, roll_up

__all__ = ["PURGED", "DeadLetterRows", "PurgeStep", "RequeueStep"]

log = logging.getLogger("clarion.deadletters")

#: ``last_error`` of a delivery whose dead letter an operator purged.
PURGED = "purged"


class RequeueStep(enum.StrEnum):
    """What :meth:`DeadLetterRows.requeue_dead_letter` found and did."""

    REQUEUED = "requeued"
    RESUMED = "resumed"  # committed by an earlier run; the broker half is left
    STALE = "stale"  # not dead-lettered any more
    MISSING = "missing"


class PurgeStep(enum.StrEnum):
    """What :meth:`DeadLetterRows.purge_dead_letter` found and did."""

    PURGED = "purged"
    STALE = "stale"
    MISSING = "missing"


class DeadLetterRows:
    """The operators' writes of dead-lettered ``notification_deliveries`` rows."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

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
            lock_notifications(s.connection(), [row.notification_id])
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
            roll_up(s.connection(), {row.notification_id: NotificationChange()}, now=now)
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
