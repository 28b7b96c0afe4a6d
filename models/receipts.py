"""Delivery reports from providers (SES events, Twilio status callbacks), applied.

A report arrives after the write-back, sometimes days later, sometimes twice,
sometimes out of order. Applying one is the only code that moves a delivery
on from ``sent``, and it moves forward only:

* ``sent -> delivered`` and ``sent -> failed``; a delivery already delivered
  or failed keeps its status (a late ``delivered`` never overwrites a bounce);
* every report not seen before is appended to the delivery's attempt history
  (``delivery_attempts``, with ``response.receipt`` naming its kind), also
  when it moves nothing (a delivery delay, Twilio's ``queued``);
* the same report twice (same ``receipt_id``) changes nothing;
* a report for a message id Clarion does not know is counted, not an error
  (``receipt_counts``): providers retry anything but a 2xx.

A report may also suppress its address (:mod:`models.suppressions`): that is
done even when the delivery is unknown, since the address is in the report.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from clarion.core.clock import utcnow
from models.base import Base, Timestamp
from models.callbacks import CallbackEvent, record_events
from models.enums import AttemptOutcome, Channel, DeliveryStatus
from models.notifications import Delivery, DeliveryAttempt
from models.rollup import NotificationChange, lock_notifications, roll_up
from models.suppressions import suppress

__all__ = [
    "Applied",
    "DeliveryReport",
    "ReceiptCount",
    "Reported",
    "SuppressionRequest",
    "apply_report",
    "receipt_counts",
]

_D: sa.Table = Delivery.__table__  # type: ignore[assignment]
_A: sa.Table = DeliveryAttempt.__table__  # type: ignore[assignment]


class ReceiptCount(Base):
    """How many reports each provider sent, by what applying them did."""

    __tablename__ = "receipt_counts"

    provider: Mapped[str] = mapped_column(sa.String(50), primary_key=True)
    #: an :class:`Applied` value
    result: Mapped[str] = mapped_column(sa.String(20), primary_key=True)
    count: Mapped[int] = mapped_column(sa.BigInteger, server_default="0", default=0)
    updated_at: Mapped[dt.datetime] = mapped_column(
        Timestamp, server_default=sa.func.current_timestamp(), default=utcnow
    )


_C: sa.Table = ReceiptCount.__table__  # type: ignore[assignment]


class Reported(enum.StrEnum):
    """What a report says about the delivery."""

    DELIVERED = "delivered"  # reached the recipient (SES Delivery, Twilio delivered)
    FAILED = "failed"  # will not reach it (permanent bounce, reject, undelivered, failed)
    PROGRESS = "progress"  # on its way or delayed; moves nothing (queued, sent, delay)
    FEEDBACK = "feedback"  # after the fact (a complaint); moves nothing


class Applied(enum.StrEnum):
    MOVED = "moved"  # the delivery's status changed
    RECORDED = "recorded"  # appended to the history only (late, or no move to make)
    DUPLICATE = "duplicate"  # seen before: nothing changed
    UNKNOWN = "unknown"  # no delivery has that message id


@dataclasses.dataclass(frozen=True, slots=True)
class SuppressionRequest:
    channel: Channel
    address: str = dataclasses.field(repr=False)
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One provider report about one sent message, already verified and parsed."""

    provider: str
    #: Unique per report (SNS MessageId; Twilio sid + status): the duplicate check.
    receipt_id: str
    kind: str  # Delivery, Bounce, Complaint, ..., or Twilio's status
    reported: Reported
    provider_message_id: str | None = None
    #: When the provider says which delivery it is (SES message tags).
    delivery_id: uuid.UUID | None = None
    error: str | None = None
    #: JSON-safe facts kept in the history: types, codes, timestamps; never a body.
    detail: dict[str, Any] = dataclasses.field(default_factory=dict)
    occurred_at: dt.datetime | None = None
    suppress: tuple[SuppressionRequest, ...] = ()


_OUTCOME = {
    Reported.DELIVERED: AttemptOutcome.DELIVERED,
    Reported.FAILED: AttemptOutcome.PERMANENT,
    Reported.PROGRESS: AttemptOutcome.SENT,
    Reported.FEEDBACK: AttemptOutcome.DELIVERED,
}


def apply_report(
    conn: Connection, report: DeliveryReport, callbacks: frozenset[str] = frozenset()
) -> Applied:
    """Apply ``report`` in the caller's transaction (see the module docstring).

    A report that moves the delivery records its status callback when its event
    is among ``callbacks``: ``delivered``, or ``bounced`` (failed by the report).
    """
    for s in report.suppress:
        suppress(
            conn,
            s.channel,
            s.address,
            reason=s.reason,
            source=report.provider,
            receipt={"kind": report.kind, "receipt_id": report.receipt_id, **report.detail},
        )
    found = _find(conn, report)
    if found is None:
        _count(conn, report.provider, Applied.UNKNOWN)
        return Applied.UNKNOWN
    # Lock order as every writer: the notification, then its delivery.
    notes = lock_notifications(conn, [found.notification_id])
    row = conn.execute(
        sa.select(_D.c.delivery_id, _D.c.notification_id, _D.c.channel, _D.c.status, _D.c.attempts)
        .where(_D.c.delivery_id == found.delivery_id)
        .with_for_update()
    ).one()
    seen = conn.execute(
        sa.select(_A.c.attempt_id)
        .where(
            _A.c.delivery_id == row.delivery_id,
            _A.c.response["receipt_id"].as_string() == report.receipt_id,
        )
        .limit(1)
    ).first()
    if seen is not None:
        _count(conn, report.provider, Applied.DUPLICATE)
        return Applied.DUPLICATE
    now = utcnow()
    status = DeliveryStatus(row.status)
    target = {
        Reported.DELIVERED: DeliveryStatus.DELIVERED,
        Reported.FAILED: DeliveryStatus.FAILED,
    }.get(report.reported)
    moves = target is not None and status is DeliveryStatus.SENT
    text = f"{report.kind}: {report.error}" if report.error else report.kind
    conn.execute(
        sa.insert(_A).values(
            delivery_id=row.delivery_id,
            notification_id=row.notification_id,
            channel=row.channel,
            attempt_number=max(row.attempts, 1),
            provider=report.provider,
            request_id=report.provider_message_id,
            outcome=_OUTCOME[report.reported],
            error_message=text if report.reported is Reported.FAILED else None,
            response={
                "receipt": report.kind,
                "receipt_id": report.receipt_id,
                "applied": "moved" if moves else "recorded",
                **report.detail,
            },
            started_at=report.occurred_at or now,
            duration_ms=0,
            created_at=now,
        )
    )
    if not moves:
        _count(conn, report.provider, Applied.RECORDED)
        return Applied.RECORDED
    values: dict[str, Any] = {"status": target, "updated_at": now}
    change = NotificationChange()
    if target is DeliveryStatus.DELIVERED:
        values["delivered_at"] = report.occurred_at or now
        change.recovered.add(Channel(row.channel).value)
    else:
        values["failed_at"] = now
        values["last_error"] = text
        change.error = f"{Channel(row.channel).value}: {text}"
    conn.execute(
        sa.update(_D)
        .where(_D.c.delivery_id == row.delivery_id, _D.c.status == DeliveryStatus.SENT)
        .values(**values)
    )
    roll_up(conn, {row.notification_id: change}, now=now, notes=notes)
    if callbacks:
        record_events(
            conn,
            [
                CallbackEvent(
                    notification_id=row.notification_id,
                    delivery_id=row.delivery_id,
                    channel=Channel(row.channel),
                    event="delivered" if target is DeliveryStatus.DELIVERED else "bounced",
                    provider=report.provider,
                    provider_message_id=report.provider_message_id,
                    error=None if target is DeliveryStatus.DELIVERED else text,
                    receipt=report.kind,
                    occurred_at=report.occurred_at or now,
                )
            ],
            callbacks,
        )
    _count(conn, report.provider, Applied.MOVED)
    return Applied.MOVED


def _find(conn: Connection, report: DeliveryReport) -> Any:
    stmt = sa.select(_D.c.delivery_id, _D.c.notification_id)
    if report.delivery_id is not None:
        row = conn.execute(stmt.where(_D.c.delivery_id == report.delivery_id)).first()
        if row is not None:
            return row
    if report.provider_message_id:
        return conn.execute(
            stmt.where(_D.c.provider_message_id == report.provider_message_id).limit(1)
        ).first()
    return None


def _count(conn: Connection, provider: str, result: Applied) -> None:
    now = utcnow()
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(_C).values(provider=provider, result=result.value, count=1, updated_at=now)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=["provider", "result"],
                set_={"count": _C.c.count + 1, "updated_at": now},
            )
        )
        return
    updated = conn.execute(
        sa.update(_C)
        .where(_C.c.provider == provider, _C.c.result == result.value)
        .values(count=_C.c.count + 1, updated_at=now)
    )
    if not updated.rowcount:
        conn.execute(
            sa.insert(_C).values(provider=provider, result=result.value, count=1, updated_at=now)
        )


def receipt_counts(conn: Connection) -> dict[tuple[str, str], int]:
    """(provider, result) -> how many reports."""
    rows = conn.execute(sa.select(_C.c.provider, _C.c.result, _C.c["count"]))
    return {(r[0], r[1]): int(r[2]) for r in rows}
