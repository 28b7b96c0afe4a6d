"""Dead letters, the database half: an operator requeues or purges a delivery.

``clarion dlq`` pairs each of these with a broker step (``clarion.operators.dlq``,
whose ``DeadLetters`` is the broker side); the database half comes first and is idempotent,
so an interrupted run can be resumed. Each method runs in a transaction of its
own and commits before returning; the batch methods take a few hundred dead
letters per transaction (one round of statements, not one per row), which is
what lets an operator requeue an outage's backlog in minutes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import utcnow
from models.base import Timestamp
from models.enums import DeliveryStatus
from models.notifications import Delivery, DeliveryStatusType
from models.rollup import NotificationChange, lock_notifications, roll_up

__all__ = ["PURGED", "DeadLetterRows", "PurgeStep", "RequeueItem", "RequeueStep"]

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


@dataclasses.dataclass(frozen=True)
class RequeueItem:
    """One dead letter to requeue: its delivery, the copy's message id, its queue."""

    delivery_id: uuid.UUID
    message_id: str
    queue_name: str


# The batch UPDATE on PostgreSQL: three arrays unnested side by side. A VALUES
# list of 500 rows is compiled afresh for every batch (no statement cache can
# hold it), which cost more than the UPDATE itself; this text is one statement.
_REQUEUE_PG = sa.text(
    "UPDATE notification_deliveries AS d SET status = :queued, attempts = 0, throttles = 0,"
    " dead_lettered_at = NULL, failed_at = NULL, next_attempt_at = NULL,"
    " message_id = v.message_id, queue_name = v.queue_name, queued_at = :now,"
    " lease_expires_at = :lease, updated_at = :now"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:message_ids AS text[]), CAST(:queues AS text[]))"
    " AS v(delivery_id, message_id, queue_name)"
    " WHERE d.delivery_id = v.delivery_id AND d.status = :failed"
    " AND d.dead_lettered_at IS NOT NULL"
    " RETURNING d.delivery_id"
).bindparams(
    sa.bindparam("queued", type_=DeliveryStatusType),
    sa.bindparam("failed", type_=DeliveryStatusType),
    sa.bindparam("now", type_=Timestamp),
    sa.bindparam("lease", type_=Timestamp),
)


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
        """The database half of a requeue of one dead letter (see :meth:`requeue_dead_letters`)."""
        [step] = self.requeue_dead_letters(
            [RequeueItem(delivery_id, message_id, queue_name)], lease_seconds=lease_seconds, now=now
        )
        return step

    def requeue_dead_letters(
        self,
        items: Sequence[RequeueItem],
        *,
        lease_seconds: float,
        now: dt.datetime | None = None,
    ) -> list[RequeueStep]:
        """The database half of a requeue, for a batch of dead letters in one transaction.

        For each item, only if its delivery is still ``failed`` with
        ``dead_lettered_at`` set: status ``queued``, ``attempts`` and
        ``throttles`` back to 0 (the notification's ``max_attempts`` applies
        afresh; ``delivery_attempts`` keeps every earlier attempt),
        ``dead_lettered_at`` and ``failed_at`` cleared, ``message_id`` the
        requeued copy's, a lease covering the wait for a worker (if the broker
        half never happens, the scheduler's lease sweep enqueues it), and the
        notification's status rolled up again (``failed`` -> ``pending``).

        Returns one step per item, in order: ``REQUEUED``; ``RESUMED`` when
        this very requeue was committed by an earlier, interrupted run (the row
        is queued with the item's ``message_id``: only the broker half is
        left); ``STALE`` when the row is no longer dead-lettered (requeued
        already, purged, or an earlier item of the batch for the same delivery
        won); ``MISSING`` without a row.
        """
        if not items:
            return []
        now = now or utcnow()
        d = Delivery
        ids = sorted({i.delivery_id for i in items})
        with self.sessions.begin() as s:
            owners: dict[uuid.UUID, uuid.UUID] = {
                r.delivery_id: r.notification_id
                for r in s.execute(
                    sa.select(d.delivery_id, d.notification_id).where(d.delivery_id.in_(ids))
                )
            }
            if not owners:
                return [RequeueStep.MISSING] * len(items)
            lock_notifications(s.connection(), owners.values())
            # One row of VALUES per delivery: with two dead letters of one
            # delivery in a batch, the first wins and the second is stale.
            first: dict[uuid.UUID, RequeueItem] = {}
            for item in items:
                if item.delivery_id in owners:
                    first.setdefault(item.delivery_id, item)
            chosen = list(first.values())
            if s.get_bind().dialect.name == "postgresql":
                done = set(
                    s.scalars(
                        _REQUEUE_PG,
                        {
                            "ids": [i.delivery_id for i in chosen],
                            "message_ids": [i.message_id for i in chosen],
                            "queues": [i.queue_name for i in chosen],
                            "queued": DeliveryStatus.QUEUED,
                            "failed": DeliveryStatus.FAILED,
                            "now": now,
                            "lease": now + dt.timedelta(seconds=lease_seconds),
                        },
                    )
                )
            else:
                done = self._requeue_portable(s, chosen, now, lease_seconds)
            current = {
                r.delivery_id: r
                for r in s.execute(
                    sa.select(d.delivery_id, d.status, d.message_id).where(
                        d.delivery_id.in_(sorted(set(owners) - done))
                    )
                )
            }
            steps = []
            for item in items:
                if item.delivery_id not in owners:
                    steps.append(RequeueStep.MISSING)
                elif item.delivery_id in done and first[item.delivery_id] is item:
                    steps.append(RequeueStep.REQUEUED)
                else:
                    row = current.get(item.delivery_id)
                    resumed = (
                        row is not None
                        and row.status == DeliveryStatus.QUEUED
                        and row.message_id == item.message_id
                    )
                    steps.append(RequeueStep.RESUMED if resumed else RequeueStep.STALE)
            if done:
                log.info("%d deliveries requeued from the dead-letter queue", len(done))
                roll_up(
                    s.connection(),
                    {owners[i]: NotificationChange() for i in sorted(done)},
                    now=now,
                )
            return steps

    @staticmethod
    def _requeue_portable(
        s: Session, chosen: Sequence[RequeueItem], now: dt.datetime, lease_seconds: float
    ) -> set[uuid.UUID]:
        """The batch UPDATE for databases without arrays (SQLite): a VALUES list."""
        d = Delivery
        batch = sa.values(
            sa.column("v_delivery_id", sa.Uuid),
            sa.column("v_message_id", sa.String),
            sa.column("v_queue_name", sa.String),
            name="requeued",
        ).data([(i.delivery_id, i.message_id, i.queue_name) for i in chosen])
        return set(
            s.scalars(
                sa.update(d)
                .where(
                    d.delivery_id == batch.c.v_delivery_id,
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
                    message_id=batch.c.v_message_id,
                    queue_name=batch.c.v_queue_name,
                    queued_at=now,
                    lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
                    updated_at=now,
                )
                .returning(d.delivery_id)
                .execution_options(synchronize_session=False)
            )
        )

    def purge_dead_letter(
        self, delivery_id: uuid.UUID, *, now: dt.datetime | None = None
    ) -> PurgeStep:
        """The database half of a purge of one dead letter (see :meth:`purge_dead_letters`)."""
        [step] = self.purge_dead_letters([delivery_id], now=now)
        return step

    def purge_dead_letters(
        self, delivery_ids: Sequence[uuid.UUID], *, now: dt.datetime | None = None
    ) -> list[PurgeStep]:
        """The database half of a purge, for a batch in one transaction: each
        delivery stays failed, ``last_error`` becomes "purged" (the original
        error stays in ``delivery_attempts``) and ``dead_lettered_at`` is
        cleared (it is in no dead-letter queue any more).

        Returns one step per id, in order: ``PURGED``, ``STALE`` (not
        dead-lettered any more, or an earlier id of the batch was the same) or
        ``MISSING``.
        """
        if not delivery_ids:
            return []
        now = now or utcnow()
        d = Delivery
        ids = sorted(set(delivery_ids))
        with self.sessions.begin() as s:
            existing = set(s.scalars(sa.select(d.delivery_id).where(d.delivery_id.in_(ids))))
            done = set(
                s.scalars(
                    sa.update(d)
                    .where(
                        d.delivery_id.in_(sorted(existing)),
                        d.status == DeliveryStatus.FAILED,
                        d.dead_lettered_at.is_not(None),
                    )
                    .values(last_error=PURGED, dead_lettered_at=None, updated_at=now)
                    .returning(d.delivery_id)
                    .execution_options(synchronize_session=False)
                )
            )
            if done:
                log.info("%d deliveries purged from the dead-letter queue", len(done))
        steps = []
        for delivery_id in delivery_ids:
            if delivery_id not in existing:
                steps.append(PurgeStep.MISSING)
            elif delivery_id in done:
                steps.append(PurgeStep.PURGED)
                done.discard(delivery_id)  # a second dead letter of it is stale
            else:
                steps.append(PurgeStep.STALE)
        return steps
