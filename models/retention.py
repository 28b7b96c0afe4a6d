"""Retention: the only code that deletes old rows of Clarion's tables.

Without it ``notifications``, ``notification_deliveries``,
``delivery_attempts``, ``real_time_events`` and ``websocket_connections``
grow for ever. What goes, per :class:`RetentionPolicy`:

* ``notifications`` (counted from ``created_at``) that are finished — sent,
  delivered, read, clicked or cancelled — after ``finished_days``, failed ones
  after ``failed_days``; with them their ``notification_deliveries`` and
  ``delivery_attempts``. Never a pending notification, never one with a
  delivery still queued or sending.
* optionally, ``delivery_attempts`` older than ``attempts_days`` of
  notifications that are kept (again never of a delivery in flight);
* ``real_time_events`` with the ``standard`` retention policy (or none) after
  ``events_days``, which must cover the resume window (the settings check it;
  the gateway's relay leaves events past that window alone anyway);
* ``websocket_connections`` rows disconnected more than ``connections_days``
  ago;
* the delivery policy's working state, which nothing reads once it is past:
  ``collapse_windows`` closed for an hour, ``rate_counters`` of hours that
  ended an hour ago (not a setting: these are not history);
* ``idempotency_keys`` (the HTTP API's stored first answers) after
  ``idempotency_days``: a repeat of a request after that is a new request.

Every deletion is a batch of at most ``batch_size`` rows in a transaction of
its own, picked by an index-friendly range (``created_at``, ``generated_at``,
``connected_at``, ``attempt_id``) with ``FOR UPDATE SKIP LOCKED``, so a purge
holds few locks for a short time and never waits for, or makes wait, the
scheduler's claims or the workers' write-backs. :meth:`Retention.count` is the
dry run: the same predicates, counted, nothing deleted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import utcnow
from clarion.core.errors import ValidationError
from clarion.core.settings import Settings
from models.enums import IN_FLIGHT, ConnectionStatus, NotificationStatus
from models.idempotency import IdempotencyRecord
from models.notifications import Delivery, DeliveryAttempt, Notification
from models.preferences import CollapseWindow, RateCounter
from models.realtime import RealTimeEvent, WebSocketConnection

__all__ = ["TABLES", "TARGETS", "PurgeReport", "Retention", "RetentionPolicy"]

log = logging.getLogger("clarion.retention")

#: The tables a purge reports on, in the order it reports them.
TABLES = (
    "notifications",
    "notification_deliveries",
    "delivery_attempts",
    "real_time_events",
    "websocket_connections",
    "collapse_windows",
    "rate_counters",
    "idempotency_keys",
)
#: What a purge can be limited to (``clarion purge --table``): deliveries go
#: with their notifications, so ``notification_deliveries`` is not one.
TARGETS = (
    "notifications",
    "delivery_attempts",
    "real_time_events",
    "websocket_connections",
    "collapse_windows",
    "rate_counters",
    "idempotency_keys",
)
#: How long the delivery policy's state outlives its use.
POLICY_STATE_GRACE = dt.timedelta(hours=1)

FINISHED = (
    NotificationStatus.SENT,
    NotificationStatus.DELIVERED,
    NotificationStatus.READ,
    NotificationStatus.CLICKED,
    NotificationStatus.CANCELLED,
)
#: Events with another retention_policy (the platform's own, e.g. "audit") are kept.
PURGEABLE_EVENT_POLICY = "standard"

_DAY = dt.timedelta(days=1)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RetentionPolicy:
    """How long each kind of row is kept, in days; 0 keeps it for ever."""

    finished_days: float = 30.0
    failed_days: float = 90.0
    attempts_days: float = 0.0
    events_days: float = 1.0
    connections_days: float = 7.0
    idempotency_days: float = 1.0
    batch_size: int = 1000

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        return cls(
            finished_days=settings.retention_notifications_days,
            failed_days=settings.retention_failed_days,
            attempts_days=settings.retention_attempts_days,
            events_days=settings.retention_events_days,
            connections_days=settings.retention_connections_days,
            idempotency_days=settings.retention_idempotency_days,
            batch_size=settings.retention_batch_size,
        )


@dataclasses.dataclass(slots=True)
class PurgeReport:
    """Rows deleted (or, for a dry run, that would be) per table."""

    counts: dict[str, int] = dataclasses.field(default_factory=lambda: dict.fromkeys(TABLES, 0))
    #: False when a time budget or a stop request ended the run with rows left.
    complete: bool = True
    batches: int = 0

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def check_targets(tables: Iterable[str] | None) -> tuple[str, ...]:
    """The purge targets asked for (all when None), refusing unknown names."""
    if tables is None:
        return TARGETS
    chosen = tuple(tables)
    for name in chosen:
        if name not in TARGETS:
            raise ValidationError("table", f"must be one of {', '.join(TARGETS)}, got {name!r}")
    return chosen


class Retention:
    """Counts and deletes the rows past a :class:`RetentionPolicy`."""

    def __init__(self, sessions: sessionmaker[Session], policy: RetentionPolicy) -> None:
        self.sessions = sessions
        self.policy = policy

    # --- predicates (shared by the dry run and the purge, so their counts agree) --------

    def _cutoff(self, now: dt.datetime, days: float) -> dt.datetime | None:
        return None if days <= 0 else now - days * _DAY

    def _notification_purgeable(self, now: dt.datetime) -> sa.ColumnElement[bool] | None:
        n = Notification
        branches = []
        finished = self._cutoff(now, self.policy.finished_days)
        if finished is not None:
            branches.append(sa.and_(n.status.in_(FINISHED), n.created_at < finished))
        failed = self._cutoff(now, self.policy.failed_days)
        if failed is not None:
            branches.append(sa.and_(n.status == NotificationStatus.FAILED, n.created_at < failed))
        if not branches:
            return None
        latest = max(c for c in (finished, failed) if c is not None)
        in_flight = (
            sa.select(Delivery.delivery_id)
            .where(Delivery.notification_id == n.notification_id, Delivery.status.in_(IN_FLIGHT))
            .exists()
        )
        # The outer created_at bound lets PostgreSQL range-scan idx_notifications_time.
        return sa.and_(n.created_at < latest, sa.or_(*branches), ~in_flight)

    def _attempt_trimmable(self, now: dt.datetime) -> sa.ColumnElement[bool] | None:
        cutoff = self._cutoff(now, self.policy.attempts_days)
        if cutoff is None:
            return None
        a = DeliveryAttempt
        in_flight = (
            sa.select(Delivery.delivery_id)
            .where(Delivery.delivery_id == a.delivery_id, Delivery.status.in_(IN_FLIGHT))
            .exists()
        )
        conditions = [a.created_at < cutoff, ~in_flight]
        purgeable = self._notification_purgeable(now)
        if purgeable is not None:
            # Those go with their notification and are counted there.
            doomed = sa.select(Notification.notification_id).where(
                Notification.notification_id == a.notification_id, purgeable
            )
            conditions.append(~doomed.exists())
        return sa.and_(*conditions)

    def _event_purgeable(self, now: dt.datetime) -> sa.ColumnElement[bool] | None:
        cutoff = self._cutoff(now, self.policy.events_days)
        if cutoff is None:
            return None
        e = RealTimeEvent
        return sa.and_(
            e.generated_at < cutoff,
            sa.or_(e.retention_policy.is_(None), e.retention_policy == PURGEABLE_EVENT_POLICY),
        )

    def _connection_purgeable(self, now: dt.datetime) -> sa.ColumnElement[bool] | None:
        cutoff = self._cutoff(now, self.policy.connections_days)
        if cutoff is None:
            return None
        c = WebSocketConnection
        return sa.and_(
            # Implied by the next two (a row disconnects after it connects), and indexed.
            c.connected_at < cutoff,
            c.connection_status == ConnectionStatus.DISCONNECTED,
            c.disconnected_at < cutoff,
        )

    # --- dry run ------------------------------------------------------------------------

    def count(
        self, *, now: dt.datetime | None = None, tables: Iterable[str] | None = None
    ) -> PurgeReport:
        """What :meth:`purge` would delete now, per table; deletes nothing."""
        now = now or utcnow()
        targets = check_targets(tables)
        report = PurgeReport()
        with self.sessions() as s:
            notifications = self._notification_purgeable(now)
            if "notifications" in targets and notifications is not None:
                doomed = sa.select(Notification.notification_id).where(notifications)
                report.counts["notifications"] = _count(s, Notification, notifications)
                report.counts["notification_deliveries"] = _count(
                    s, Delivery, Delivery.notification_id.in_(doomed)
                )
                report.counts["delivery_attempts"] = _count(
                    s, DeliveryAttempt, DeliveryAttempt.notification_id.in_(doomed)
                )
            attempts = self._attempt_trimmable(now)
            if "delivery_attempts" in targets and attempts is not None:
                report.counts["delivery_attempts"] += _count(s, DeliveryAttempt, attempts)
            events = self._event_purgeable(now)
            if "real_time_events" in targets and events is not None:
                report.counts["real_time_events"] = _count(s, RealTimeEvent, events)
            connections = self._connection_purgeable(now)
            if "websocket_connections" in targets and connections is not None:
                report.counts["websocket_connections"] = _count(s, WebSocketConnection, connections)
            for table, model, _keys, _age, where in self._policy_state(now):
                if table in targets:
                    report.counts[table] = _count(s, model, where)
        return report

    # --- purge --------------------------------------------------------------------------

    def purge(
        self,
        *,
        now: dt.datetime | None = None,
        tables: Iterable[str] | None = None,
        max_seconds: float | None = None,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> PurgeReport:
        """Delete every row past the policy, batch by batch.

        ``max_seconds`` bounds the run (checked between batches; what is left
        waits for the next run, and the report says ``complete=False``).
        """
        now = now or utcnow()
        targets = check_targets(tables)
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        report = PurgeReport()
        steps: list[Callable[[dt.datetime, PurgeReport], int]] = []
        if "notifications" in targets:
            steps.append(self._purge_notifications)
        if "delivery_attempts" in targets:
            steps.append(self._trim_attempts)
        if "real_time_events" in targets:
            steps.append(self._purge_events)
        if "websocket_connections" in targets:
            steps.append(self._purge_connections)
        for table, model, keys, age, where in self._policy_state(now):
            if table in targets:
                steps.append(functools.partial(self._purge_keyed, table, model, keys, age, where))
        for step in steps:
            while True:
                if should_stop() or (deadline is not None and time.monotonic() >= deadline):
                    report.complete = False
                    return report
                deleted = step(now, report)
                if deleted:
                    report.batches += 1
                # A short batch: nothing more is past retention (or the rest is locked).
                if deleted < self.policy.batch_size:
                    break
        return report

    def _purge_notifications(self, now: dt.datetime, report: PurgeReport) -> int:
        purgeable = self._notification_purgeable(now)
        if purgeable is None:
            return 0
        with self.sessions.begin() as s:
            ids = list(
                s.scalars(
                    sa.select(Notification.notification_id)
                    .where(purgeable)
                    .order_by(Notification.created_at)
                    .limit(self.policy.batch_size)
                    .with_for_update(of=Notification, skip_locked=True)
                )
            )
            if not ids:
                return 0
            # Children first, each by an indexed notification_id (the schema's
            # ON DELETE CASCADE would do it too, but uncounted).
            report.counts["delivery_attempts"] += _delete(
                s, DeliveryAttempt, DeliveryAttempt.notification_id.in_(ids)
            )
            report.counts["notification_deliveries"] += _delete(
                s, Delivery, Delivery.notification_id.in_(ids)
            )
            deleted = _delete(s, Notification, Notification.notification_id.in_(ids))
            report.counts["notifications"] += deleted
        return len(ids)

    def _trim_attempts(self, now: dt.datetime, report: PurgeReport) -> int:
        a = DeliveryAttempt
        # attempt_id grows with time: walking the primary key finds the old rows first.
        return self._purge_rows(
            report, "delivery_attempts", a.attempt_id, a.attempt_id, self._attempt_trimmable(now)
        )

    def _purge_events(self, now: dt.datetime, report: PurgeReport) -> int:
        e = RealTimeEvent
        return self._purge_rows(
            report, "real_time_events", e.event_id, e.generated_at, self._event_purgeable(now)
        )

    def _purge_connections(self, now: dt.datetime, report: PurgeReport) -> int:
        c = WebSocketConnection
        return self._purge_rows(
            report,
            "websocket_connections",
            c.connection_id,
            c.connected_at,
            self._connection_purgeable(now),
        )

    def _purge_rows(
        self,
        report: PurgeReport,
        table: str,
        key: Any,
        age: Any,
        purgeable: sa.ColumnElement[bool] | None,
    ) -> int:
        """One batch of rows with no children of their own: the oldest purgeable, locked
        rows skipped (conditions on other tables are EXISTS subqueries, never locked)."""
        if purgeable is None:
            return 0
        model = key.class_
        with self.sessions.begin() as s:
            ids = list(
                s.scalars(
                    sa.select(key)
                    .where(purgeable)
                    .order_by(age)
                    .limit(self.policy.batch_size)
                    .with_for_update(skip_locked=True)
                )
            )
            if not ids:
                return 0
            report.counts[table] += _delete(s, model, key.in_(ids))
        return len(ids)

    def _policy_state(
        self, now: dt.datetime
    ) -> list[tuple[str, Any, list[Any], Any, sa.ColumnElement[bool]]]:
        """The tables with a composite key, purged by :meth:`_purge_keyed`: the delivery
        policy's working state, and the HTTP API's stored answers."""
        w, r, k = CollapseWindow, RateCounter, IdempotencyRecord
        keyed: list[tuple[str, Any, list[Any], Any, sa.ColumnElement[bool]]] = [
            (
                "collapse_windows",
                w,
                [w.user_id, w.auction_id, w.collapse_key],
                w.closes_at,
                w.closes_at < now - POLICY_STATE_GRACE,
            ),
            (
                "rate_counters",
                r,
                [r.user_id, r.channel, r.hour_start],
                r.hour_start,
                r.hour_start < now - POLICY_STATE_GRACE - dt.timedelta(hours=1),
            ),
        ]
        idempotency = self._cutoff(now, self.policy.idempotency_days)
        if idempotency is not None:
            keyed.append(
                (
                    "idempotency_keys",
                    k,
                    [k.api_key_id, k.idempotency_key],
                    k.created_at,
                    k.created_at < idempotency,
                )
            )
        return keyed

    def _purge_keyed(
        self,
        table: str,
        model: Any,
        keys: list[Any],
        age: Any,
        purgeable: sa.ColumnElement[bool],
        _now: dt.datetime,
        report: PurgeReport,
    ) -> int:
        """:meth:`_purge_rows` for a table with a composite primary key."""
        with self.sessions.begin() as s:
            rows = [
                tuple(row)
                for row in s.execute(
                    sa.select(*keys)
                    .where(purgeable)
                    .order_by(age)
                    .limit(self.policy.batch_size)
                    .with_for_update(skip_locked=True)
                )
            ]
            if not rows:
                return 0
            report.counts[table] += _delete(s, model, sa.tuple_(*keys).in_(rows))
        return len(rows)


def _count(s: Session, model: Any, where: sa.ColumnElement[bool]) -> int:
    return int(s.scalar(sa.select(sa.func.count()).select_from(model).where(where)) or 0)


def _delete(s: Session, model: Any, where: sa.ColumnElement[bool]) -> int:
    result = s.execute(sa.delete(model).where(where).execution_options(synchronize_session=False))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
