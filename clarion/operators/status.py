"""``clarion status``: queues, notifications, leases and workers, with a health verdict.

Dead letters are counted on both sides, per queue: the broker's dead-letter
queues and the deliveries PostgreSQL records as dead-lettered. Where they
differ the report says so (``dead_letters.disagree``): a message that expired
from the broker after its 7 days, or was lost, is in the database only; a dead
letter whose row is no longer dead-lettered, or that died without its
write-back, is in the broker only. A difference is reported, not judged
unhealthy: it is normal for the moment between a delivery's write-back and the
broker moving its message to the dead-letter queue.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import as_utc, utcnow
from clarion.operators.deadletters import DeadLetters, QueueCounts
from clarion.operators.dlq import Disagreement, compare_counts, dead_lettered_counts
from models.enums import IN_FLIGHT, DeliveryStatus, NotificationStatus
from models.notifications import Delivery, DeliveryAttempt, Notification


@dataclasses.dataclass(frozen=True)
class Thresholds:
    #: Unhealthy when the oldest due-but-unclaimed notification waited longer (s).
    max_due_age: float = 60.0
    #: Unhealthy with fewer live workers.
    min_workers: int = 1
    #: Unhealthy with more dead letters in total (None: not checked).
    max_dead: int | None = None
    #: A Redis worker is live if its last heartbeat is this recent (s).
    heartbeat_window: float = 60.0


@dataclasses.dataclass(frozen=True)
class Report:
    broker: str
    queues: list[QueueCounts]
    last_hour: dict[str, int]
    last_day: dict[str, int]
    oldest_due_age: float | None
    oldest_due_id: str | None
    expired_leases: int
    live_workers: int
    problems: list[str]
    #: Dead-lettered deliveries per queue, as PostgreSQL records them.
    dead_in_database: dict[str | None, int] = dataclasses.field(default_factory=dict)
    #: Queues where the broker and the database count dead letters differently.
    disagree: list[Disagreement] = dataclasses.field(default_factory=list)
    #: Deliveries the delivery policy holds now, and when the next one is released.
    held: int = 0
    next_release: dt.datetime | None = None
    #: The policy's decisions on deliveries created in the last hour.
    policy_last_hour: dict[str, int] = dataclasses.field(default_factory=dict)
    #: provider -> {"attempts": {outcome: count in the last hour}, "breaker": state}
    providers: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "problems": self.problems,
            "broker": self.broker,
            "queues": [
                {**dataclasses.asdict(q), "dead_in_database": self.dead_in_database.get(q.queue, 0)}
                for q in self.queues
            ],
            "totals": {
                "ready": sum(q.ready for q in self.queues),
                "delayed": sum(q.delayed for q in self.queues),
                "dead": sum(q.dead for q in self.queues),
                "dead_in_database": sum(self.dead_in_database.values()),
            },
            "dead_letters": {
                "broker": sum(q.dead for q in self.queues),
                "database": sum(self.dead_in_database.values()),
                "disagree": [d.to_json() for d in self.disagree],
            },
            "notifications": {"last_hour": self.last_hour, "last_day": self.last_day},
            "oldest_due_age_seconds": self.oldest_due_age,
            "oldest_due_notification_id": self.oldest_due_id,
            "expired_leases": self.expired_leases,
            "live_workers": self.live_workers,
            "held": self.held,
            "next_release": None
            if self.next_release is None
            else self.next_release.isoformat(timespec="seconds"),
            "policy_last_hour": self.policy_last_hour,
            "providers": self.providers,
        }


def _by_status(s: Session, since: dt.datetime) -> dict[str, int]:
    n = Notification
    counts = {st.value: 0 for st in NotificationStatus}
    for status, count in s.execute(
        sa.select(n.status, sa.func.count()).where(n.created_at >= since).group_by(n.status)
    ):
        counts[str(getattr(status, "value", status))] = int(count)
    return counts


def oldest_due(s: Session, now: dt.datetime) -> tuple[str, float] | None:
    """The oldest due notification no scheduler has claimed: (its id, seconds it has waited)."""
    n = Notification
    due_since = sa.func.coalesce(n.scheduled_at, n.created_at)
    oldest = s.execute(
        sa.select(n.notification_id, due_since.label("due"))
        .where(
            n.status == NotificationStatus.PENDING,
            n.dispatched_at.is_(None),
            sa.or_(n.scheduled_at.is_(None), n.scheduled_at <= now),
            sa.or_(n.expires_at.is_(None), n.expires_at > now),
        )
        .order_by(due_since)
        .limit(1)
    ).one_or_none()
    if oldest is None:
        return None
    due = as_utc(oldest.due)
    assert due is not None
    return str(oldest.notification_id), max(0.0, (now - due).total_seconds())


def expired_leases(s: Session, now: dt.datetime) -> int:
    """Deliveries still queued or sending past their lease (the sweep will queue them again)."""
    d = Delivery
    return int(
        s.scalar(
            sa.select(sa.func.count()).where(d.status.in_(IN_FLIGHT), d.lease_expires_at < now)
        )
        or 0
    )


def _providers(
    s: Session, since: dt.datetime, breaker_states: Callable[[list[str]], dict[str, str]] | None
) -> dict[str, dict[str, Any]]:
    """Which provider did what in the last hour (receipts excluded), with its breaker state."""
    a = DeliveryAttempt
    out: dict[str, dict[str, Any]] = {}
    rows = s.execute(
        sa.select(a.provider, a.outcome, sa.func.count())
        .where(a.created_at >= since, a.response["receipt"].as_string().is_(None))
        .group_by(a.provider, a.outcome)
    )
    for provider, outcome, count in rows:
        entry = out.setdefault(provider, {"attempts": {}, "breaker": "closed"})
        entry["attempts"][str(getattr(outcome, "value", outcome))] = int(count)
    if breaker_states is not None:
        for provider, state in breaker_states(sorted(out)).items():
            out.setdefault(provider, {"attempts": {}, "breaker": "closed"})["breaker"] = state
    return out


def gather(
    sessions: sessionmaker[Session],
    dead_letters: DeadLetters,
    thresholds: Thresholds,
    *,
    broker: str,
    breaker_states: Callable[[list[str]], dict[str, str]] | None = None,
) -> Report:
    now = utcnow()
    with sessions() as s:
        last_hour = _by_status(s, now - dt.timedelta(hours=1))
        last_day = _by_status(s, now - dt.timedelta(days=1))
        oldest = oldest_due(s, now)
        expired = expired_leases(s, now)
        held, next_release = s.execute(
            sa.select(sa.func.count(), sa.func.min(Delivery.held_until)).where(
                Delivery.held_until.is_not(None), Delivery.status == DeliveryStatus.QUEUED
            )
        ).one()
        policy = _policy_decisions(s, now - dt.timedelta(hours=1))
        providers = _providers(s, now - dt.timedelta(hours=1), breaker_states)
    in_database = dead_lettered_counts(sessions)
    queues = dead_letters.counts()
    workers = dead_letters.live_workers(thresholds.heartbeat_window)
    oldest_id, age = oldest if oldest is not None else (None, None)
    problems = []
    if workers < thresholds.min_workers:
        problems.append(f"{workers} live workers (want at least {thresholds.min_workers})")
    if age is not None and age > thresholds.max_due_age:
        problems.append(
            f"oldest due notification {oldest_id} waited {age:.0f} s "
            f"(threshold {thresholds.max_due_age:g} s)"
        )
    dead = sum(q.dead for q in queues)
    if thresholds.max_dead is not None and dead > thresholds.max_dead:
        problems.append(f"{dead} dead letters (threshold {thresholds.max_dead})")
    return Report(
        broker,
        queues,
        last_hour,
        last_day,
        age,
        oldest_id,
        expired,
        workers,
        problems,
        in_database,
        compare_counts(queues, in_database),
        held=int(held or 0),
        next_release=as_utc(next_release),
        policy_last_hour=policy,
        providers=providers,
    )


def _policy_decisions(s: Session, since: dt.datetime) -> dict[str, int]:
    """held (then sent or still waiting), skipped (opt-out, presence), folded, cancelled."""
    d = Delivery
    kind = sa.case(
        (d.folded_into.is_not(None), "folded"),
        (d.status != DeliveryStatus.CANCELLED, "held"),
        (d.queued_at.is_(None), "skipped"),
        else_="cancelled",
    )
    counts = {"held": 0, "skipped": 0, "folded": 0, "cancelled": 0}
    for name, count in s.execute(
        sa.select(kind, sa.func.count())
        .where(d.created_at >= since, d.policy_reason.is_not(None))
        .group_by(kind)
    ):
        counts[str(name)] = int(count)
    return counts
