"""Retention on PostgreSQL: what a purge deletes, what it keeps, how it batches.

Rows are written with back-dated timestamps, then purged by
``models.retention`` directly, by ``clarion purge`` and by a real
``clarion scheduler`` process.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from harness import wait_until
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from testdb import REDIS_URL

from clarion.core.errors import SettingsError, ValidationError
from clarion.core.settings import Settings
from models.enums import (
    AttemptOutcome,
    Category,
    Channel,
    ConnectionStatus,
    DeliveryStatus,
    EventCategory,
    NotificationStatus,
    Priority,
    Visibility,
)
from models.idempotency import IdempotencyRecord
from models.notifications import Delivery, DeliveryAttempt, Notification
from models.realtime import RealTimeEvent, WebSocketConnection
from models.retention import Retention, RetentionPolicy

pytestmark = pytest.mark.postgres

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)


def notification(
    s: Session,
    age: dt.timedelta,
    status: NotificationStatus,
    deliveries: tuple[tuple[Channel, DeliveryStatus], ...] = (),
    attempts_per_delivery: int = 1,
    attempt_age: dt.timedelta | None = None,
) -> uuid.UUID:
    created = NOW - age
    n = Notification(
        user_id=uuid.uuid4(),
        notification_type=Channel.EMAIL,
        category=Category.AUCTION,
        priority=Priority.NORMAL,
        title="t",
        message="m",
        delivery_channels=[c.value for c, _ in deliveries] or ["email"],
        status=status,
        created_at=created,
        dispatched_at=None if status is NotificationStatus.PENDING else created,
    )
    s.add(n)
    s.flush()
    for channel, state in deliveries:
        d = Delivery(notification_id=n.notification_id, channel=channel, status=state)
        s.add(d)
        s.flush()
        for number in range(1, attempts_per_delivery + 1):
            s.add(
                DeliveryAttempt(
                    delivery_id=d.delivery_id,
                    notification_id=n.notification_id,
                    channel=channel,
                    attempt_number=number,
                    provider="sandbox",
                    outcome=AttemptOutcome.SENT,
                    started_at=created,
                    duration_ms=3,
                    created_at=NOW - (attempt_age if attempt_age is not None else age),
                )
            )
    return n.notification_id


def event(s: Session, age: dt.timedelta, policy: str = "standard") -> uuid.UUID:
    e = RealTimeEvent(
        event_type="bid_placed",
        event_category=EventCategory.BID,
        event_data={},
        visibility=Visibility.PUBLIC,
        broadcast_channels=["bid"],
        generated_at=NOW - age,
        published_at=NOW - age,
        retention_policy=policy,
    )
    s.add(e)
    s.flush()
    return e.event_id


def connection(
    s: Session, connected_age: dt.timedelta, disconnected_age: dt.timedelta | None
) -> uuid.UUID:
    c = WebSocketConnection(
        user_id=uuid.uuid4(),
        session_id="s",
        socket_id=str(uuid.uuid4()),
        connection_status=(
            ConnectionStatus.CONNECTED
            if disconnected_age is None
            else ConnectionStatus.DISCONNECTED
        ),
        client_ip="127.0.0.1",
        user_agent="test",
        connected_at=NOW - connected_age,
        disconnected_at=None if disconnected_age is None else NOW - disconnected_age,
        subscriptions=[],
        auction_subscriptions=[],
    )
    s.add(c)
    s.flush()
    return c.connection_id


def stored_answer(s: Session, age: dt.timedelta) -> tuple[uuid.UUID, str]:
    """An ``Idempotency-Key``'s stored first answer, ``age`` old."""
    record = IdempotencyRecord(
        api_key_id=uuid.uuid4(),
        idempotency_key=f"key-{uuid.uuid4()}",
        request_hash="0" * 64,
        status_code=201,
        response={"notification_id": str(uuid.uuid4())},
        created_at=NOW - age,
    )
    s.add(record)
    s.flush()
    return record.api_key_id, record.idempotency_key


@dataclass
class World:
    doomed: set[uuid.UUID]
    kept: set[uuid.UUID]
    doomed_events: set[uuid.UUID]
    kept_events: set[uuid.UUID]
    doomed_connections: set[uuid.UUID]
    kept_connections: set[uuid.UUID]
    doomed_keys: set[tuple[uuid.UUID, str]]
    kept_keys: set[tuple[uuid.UUID, str]]


DELIVERED = ((Channel.EMAIL, DeliveryStatus.DELIVERED), (Channel.SMS, DeliveryStatus.SENT))
FAILED = ((Channel.EMAIL, DeliveryStatus.FAILED),)


@pytest.fixture
def world(clean_db: Engine) -> World:
    """Rows on both sides of every default retention limit."""
    ns = NotificationStatus
    with sessionmaker(clean_db).begin() as s:
        doomed = {
            notification(s, 40 * DAY, ns.DELIVERED, DELIVERED, attempts_per_delivery=2),
            notification(s, 31 * DAY, ns.READ, DELIVERED),
            notification(s, 35 * DAY, ns.CANCELLED, ((Channel.PUSH, DeliveryStatus.CANCELLED),)),
            notification(s, 100 * DAY, ns.FAILED, FAILED, attempts_per_delivery=3),
        }
        kept = {
            notification(s, 10 * DAY, ns.DELIVERED, DELIVERED),  # inside retention
            notification(s, 40 * DAY, ns.FAILED, FAILED),  # failed ones are kept longer
            notification(s, 40 * DAY, ns.PENDING),  # never pending
            # Finished by its status but a channel is still in flight: never.
            notification(
                s,
                40 * DAY,
                ns.SENT,
                ((Channel.EMAIL, DeliveryStatus.SENT), (Channel.SMS, DeliveryStatus.QUEUED)),
            ),
            notification(s, 100 * DAY, ns.FAILED, ((Channel.SMS, DeliveryStatus.SENDING),)),
        }
        doomed_events = {event(s, 2 * DAY), event(s, 30 * DAY)}
        kept_events = {event(s, dt.timedelta(hours=1)), event(s, 30 * DAY, policy="audit")}
        doomed_connections = {connection(s, 10 * DAY, 9 * DAY)}
        kept_connections = {
            connection(s, 3 * DAY, 2 * DAY),  # disconnected recently
            connection(s, 10 * DAY, None),  # still connected, however old
            connection(s, 10 * DAY, 2 * DAY),  # connected long ago, disconnected recently
        }
        doomed_keys = {stored_answer(s, 2 * DAY), stored_answer(s, 5 * DAY)}
        kept_keys = {stored_answer(s, dt.timedelta(hours=1))}
    return World(
        doomed,
        kept,
        doomed_events,
        kept_events,
        doomed_connections,
        kept_connections,
        doomed_keys,
        kept_keys,
    )


#: What the world holds past retention: 4 notifications, 1+2+... see ``world``.
EXPECTED = {
    "notifications": 4,
    "notification_deliveries": 2 + 2 + 1 + 1,
    "delivery_attempts": 4 + 2 + 1 + 3,
    "real_time_events": 2,
    "websocket_connections": 1,
    "collapse_windows": 0,
    "rate_counters": 0,
    "idempotency_keys": 2,
}


def retention(engine: Engine, **policy: float) -> Retention:
    return Retention(sessionmaker(engine), RetentionPolicy(**policy))  # type: ignore[arg-type]


def ids(engine: Engine, column: sa.ColumnElement[uuid.UUID]) -> set[uuid.UUID]:
    with engine.connect() as conn:
        return set(conn.scalars(sa.select(column)))


def table_counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            t: int(conn.exec_driver_sql(f"SELECT count(*) FROM {t}").scalar_one()) for t in EXPECTED
        }


def test_purge_deletes_rows_past_retention_and_keeps_the_rest(
    clean_db: Engine, world: World
) -> None:
    report = retention(clean_db).purge()

    assert report.counts == EXPECTED
    assert report.complete
    assert ids(clean_db, Notification.notification_id) == world.kept
    assert ids(clean_db, RealTimeEvent.event_id) == world.kept_events
    assert ids(clean_db, WebSocketConnection.connection_id) == world.kept_connections
    with clean_db.connect() as conn:
        keys = {
            (r.api_key_id, r.idempotency_key)
            for r in conn.execute(
                sa.select(IdempotencyRecord.api_key_id, IdempotencyRecord.idempotency_key)
            )
        }
    assert keys == world.kept_keys
    # Kept notifications keep every child; no orphan is left of the deleted ones.
    with clean_db.connect() as conn:
        parents = set(conn.scalars(sa.select(Delivery.notification_id)))
        parents |= set(conn.scalars(sa.select(DeliveryAttempt.notification_id)))
    assert parents <= world.kept
    assert table_counts(clean_db)["notification_deliveries"] == 2 + 1 + 0 + 2 + 1
    # A second run finds nothing more.
    assert retention(clean_db).purge().total == 0


def test_dry_run_deletes_nothing_and_counts_what_the_purge_deletes(
    clean_db: Engine, world: World
) -> None:
    before = table_counts(clean_db)
    dry = retention(clean_db).count()
    assert dry.counts == EXPECTED
    assert table_counts(clean_db) == before

    assert retention(clean_db).purge().counts == dry.counts


def test_zero_days_keeps_a_table(clean_db: Engine, world: World) -> None:
    report = retention(
        clean_db,
        finished_days=0,
        failed_days=0,
        events_days=0,
        connections_days=0,
        idempotency_days=0,
    ).purge()
    assert report.total == 0
    assert len(ids(clean_db, Notification.notification_id)) == len(world.doomed | world.kept)


def test_only_the_tables_asked_for(clean_db: Engine, world: World) -> None:
    report = retention(clean_db).purge(tables=["websocket_connections"])
    assert report.total == 1
    assert ids(clean_db, Notification.notification_id) == world.doomed | world.kept
    with pytest.raises(ValidationError, match="table"):
        retention(clean_db).purge(tables=["users"])


def test_batches_are_bounded(clean_db: Engine) -> None:
    with sessionmaker(clean_db).begin() as s:
        for _ in range(10):
            notification(s, 40 * DAY, NotificationStatus.DELIVERED, DELIVERED)
    purge = retention(clean_db, batch_size=3)

    # Stop after the first batch: exactly one batch's worth is gone, and committed.
    calls = iter([False, True])
    first = purge.purge(tables=["notifications"], should_stop=lambda: next(calls))
    assert first.counts["notifications"] == 3
    assert not first.complete
    assert len(ids(clean_db, Notification.notification_id)) == 7

    rest = purge.purge(tables=["notifications"])
    assert rest.counts["notifications"] == 7
    assert rest.batches == 3  # 3 + 3 + 1
    assert rest.complete


def test_time_budget_ends_a_run_early(clean_db: Engine) -> None:
    with sessionmaker(clean_db).begin() as s:
        for _ in range(4):
            connection(s, 10 * DAY, 9 * DAY)
    report = retention(clean_db, batch_size=1).purge(max_seconds=0.0)
    assert report.total == 0
    assert not report.complete


def test_attempts_of_kept_notifications_are_trimmed_when_asked(clean_db: Engine) -> None:
    ns = NotificationStatus
    with sessionmaker(clean_db).begin() as s:
        kept_failed = notification(s, 40 * DAY, ns.FAILED, FAILED, attempts_per_delivery=3)
        recent = notification(
            s, 1 * DAY, ns.DELIVERED, DELIVERED, attempt_age=dt.timedelta(hours=1)
        )
        in_flight = notification(
            s, 40 * DAY, ns.PENDING, ((Channel.SMS, DeliveryStatus.SENDING),), 2
        )
    purge = retention(clean_db, attempts_days=7)
    assert purge.count(tables=["delivery_attempts"]).counts["delivery_attempts"] == 3
    report = purge.purge(tables=["delivery_attempts"])
    assert report.counts["delivery_attempts"] == 3
    with clean_db.connect() as conn:
        left = list(conn.scalars(sa.select(DeliveryAttempt.notification_id)))
    assert kept_failed not in left
    assert sorted(map(str, left)) == sorted(map(str, [recent, recent, in_flight, in_flight]))
    # The notification itself and its delivery stay.
    assert kept_failed in ids(clean_db, Notification.notification_id)
    assert kept_failed in ids(clean_db, Delivery.notification_id)


def test_events_must_outlive_the_resume_window() -> None:
    with pytest.raises(SettingsError, match="CLARION_RETENTION_EVENTS_DAYS"):
        Settings.from_env({"CLARION_RETENTION_EVENTS_DAYS": "0.001"})  # 86 s < 300 s
    with pytest.raises(SettingsError, match="CLARION_RETENTION_FAILED_DAYS"):
        Settings.from_env({"CLARION_RETENTION_FAILED_DAYS": "-1"})
    assert Settings.from_env({"CLARION_RETENTION_EVENTS_DAYS": "0"}).retention_events_days == 0


# --- the command and the daemon -----------------------------------------------------------


def clarion(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env={**os.environ, "CLARION_DATABASE_URL": url, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def printed(out: str) -> dict[str, int]:
    rows = (line.split() for line in out.strip().splitlines())
    return {row[0]: int(row[-1]) for row in rows}


def test_purge_command_dry_run_then_purge(pg_url: str, clean_db: Engine, world: World) -> None:
    before = table_counts(clean_db)
    dry = clarion(pg_url, "purge", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete" in dry.stdout
    assert printed(dry.stdout) == EXPECTED
    assert table_counts(clean_db) == before

    bad = clarion(pg_url, "purge", "--table", "users")
    assert bad.returncode == 2
    assert "table" in bad.stderr and "users" in bad.stderr

    done = clarion(pg_url, "purge", "--table", "real_time_events")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == {**dict.fromkeys(EXPECTED, 0), "real_time_events": 2}

    done = clarion(pg_url, "purge")
    assert done.returncode == 0, done.stderr
    assert printed(done.stdout) == {**EXPECTED, "real_time_events": 0}
    assert ids(clean_db, Notification.notification_id) == world.kept


@pytest.fixture
def scheduler(pg_url: str, clean_db: Engine) -> Iterator[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": pg_url,
        "CLARION_BROKER_URL": REDIS_URL,
        "CLARION_RETENTION_INTERVAL": "0.5",
        "CLARION_RETENTION_BATCH_SIZE": "2",
        # No /metrics endpoint: its default port may be held by another run.
        "CLARION_SCHEDULER_METRICS_PORT": "0",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "clarion", "scheduler"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    yield proc
    proc.terminate()
    proc.communicate(timeout=60)


def test_the_scheduler_purges_on_its_own(
    clean_db: Engine, world: World, scheduler: subprocess.Popen[str]
) -> None:
    wait_until(
        lambda: (
            ids(clean_db, Notification.notification_id) == world.kept
            and ids(clean_db, RealTimeEvent.event_id) == world.kept_events
            and ids(clean_db, WebSocketConnection.connection_id) == world.kept_connections
        ),
        timeout=60,
        what="the scheduler's purge",
    )
    # Rows that grow old while it runs go at a later run.
    with sessionmaker(clean_db).begin() as s:
        late = connection(s, 30 * DAY, 20 * DAY)
    wait_until(
        lambda: late not in ids(clean_db, WebSocketConnection.connection_id),
        timeout=60,
        what="a second purge",
    )
    assert scheduler.poll() is None
