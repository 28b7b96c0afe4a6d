"""scheduled_at and expires_at, end to end through a real scheduler and worker."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def test_scheduled_notification_is_sent_at_its_time_not_before(stack: Any, pl: Any) -> None:
    pl.warm_up("webhook")
    user = pl.user(webhook=True)
    scheduled_at = utcnow() + dt.timedelta(seconds=2)
    notification_id = pl.notify(user, ["webhook"], scheduled_at=scheduled_at)

    # Nothing happens before its time: no delivery row, no request.
    time.sleep(max(0.0, (scheduled_at - utcnow()).total_seconds() - 0.3))
    assert pl.deliveries(notification_id) == {}
    assert pl.webhook_requests(user) == []

    [request] = pl.wait_until(
        lambda: pl.webhook_requests(user), timeout=10, what="the scheduled webhook"
    )
    due = scheduled_at.timestamp()
    print(f"scheduled notification reached the sandbox {request.at - due:+.3f} s after its time")
    assert request.at >= due
    assert request.at - due < 1.0

    notification, rows = pl.wait_final(notification_id, 1)
    assert rows["webhook"].status == "delivered"
    assert rows["webhook"].queued_at >= scheduled_at
    assert notification.status == "delivered"
    assert notification.dispatched_at >= scheduled_at


def test_expired_notification_is_never_sent(stack: Any, pl: Any) -> None:
    user = pl.user(webhook=True, email=True)
    [notification_id] = pl.insert(
        user, ["webhook", "email"], expires_at=utcnow() - dt.timedelta(minutes=1)
    )

    notification = pl.wait_until(
        lambda: (n := pl.notification(notification_id)).status == "cancelled" and n,
        timeout=10,
        what="the expired notification to be cancelled",
    )
    assert "expired" in notification.error_message
    assert notification.dispatched_at is None
    assert notification.sent_at is None
    time.sleep(1.0)  # two poll intervals: still nothing sent
    assert pl.deliveries(notification_id) == {}
    assert pl.webhook_requests(user) == []
    assert pl.ses_requests(notification_id) == []
    assert pl.notification(notification_id).status == "cancelled"


def test_notification_expiring_before_its_schedule_is_never_sent(stack: Any, pl: Any) -> None:
    # notify() refuses expires_at before scheduled_at; another service writing
    # plain SQL may still do it.
    user = pl.user(webhook=True)
    now = utcnow()
    scheduled_at = now + dt.timedelta(seconds=2)
    expires_at = now + dt.timedelta(seconds=1)
    [notification_id] = pl.insert(
        user, ["webhook"], scheduled_at=scheduled_at, expires_at=expires_at
    )

    notification = pl.wait_until(
        lambda: (n := pl.notification(notification_id)).status == "cancelled" and n,
        timeout=10,
        what="the notification to be cancelled at its expiry",
    )
    assert utcnow() >= expires_at
    assert "expired" in notification.error_message
    # Past the scheduled time too: nothing was dispatched or sent.
    time.sleep(max(0.0, (scheduled_at - utcnow()).total_seconds()) + 1.0)
    assert pl.deliveries(notification_id) == {}
    assert pl.webhook_requests(user) == []
    final = pl.notification(notification_id)
    assert final.status == "cancelled"
    assert final.dispatched_at is None
