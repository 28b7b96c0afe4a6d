"""Tests that need Clarion processes with settings of their own.

No shared stack runs in this module: each test starts its own scheduler(s)
and worker on a freshly emptied database and Redis DB.
"""

from __future__ import annotations

import re
import statistics
import time
import uuid
from typing import Any

import dramatiq
import pytest
import redis
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_new_notification_is_picked_up_without_waiting_for_the_poll(stacks: Any, pl: Any) -> None:
    stack = stacks("notify", CLARION_POLL_INTERVAL="30")
    stack.worker()
    stack.scheduler()
    stack.wait_ready()
    user = pl.user(sms=True)
    [warm] = pl.insert(user, ["sms"])
    pl.wait_final(warm, 1, timeout=30)
    time.sleep(1.0)  # let the scheduler and the worker go idle

    latencies, claims = [], []
    for _ in range(3):
        seen = len(pl.twilio_requests(user.sms))
        started = time.time()
        [notification_id] = pl.insert(user, ["sms"])
        pl.wait_until(
            lambda n=seen: len(pl.twilio_requests(user.sms)) > n,
            timeout=10,
            what="the sms request",
        )
        latencies.append(pl.twilio_requests(user.sms)[-1].at - started)
        _, rows = pl.wait_final(notification_id, 1)
        claims.append(rows["sms"].queued_at.timestamp() - started)
        time.sleep(1.0)
    print(
        "pick-up latency (plain SQL INSERT -> sandbox request): "
        + ", ".join(f"{x:.3f}" for x in latencies)
        + f" s; median {statistics.median(latencies):.3f} s; scheduler claim after "
        + ", ".join(f"{x:.3f}" for x in claims)
        + " s"
    )
    # The scheduler wakes on the INSERT's NOTIFY, not after the 30 s poll.
    assert max(claims) < 0.5
    # The rest is the worker's idle poll of Redis (dramatiq backs off to up
    # to 1 s between fetches on an idle queue).
    assert max(latencies) < 1.0


def test_webhook_to_a_private_address_is_refused_by_default(stacks: Any, pl: Any) -> None:
    stack = stacks("private", CLARION_WEBHOOK_ALLOW_PRIVATE=None)
    stack.worker()
    stack.scheduler()
    stack.wait_ready()
    user = pl.user(webhook=True, sms=True)  # webhook on 127.0.0.1
    notification_id = pl.notify(user, ["webhook", "sms"])

    notification, rows = pl.wait_final(notification_id, 2, timeout=30)
    hook = rows["webhook"]
    assert hook.status == "failed"
    assert hook.attempts == 1
    assert hook.last_error.startswith("BadAddressError")
    assert "not public" in hook.last_error
    [attempt] = pl.attempts(hook.delivery_id)
    assert attempt.outcome == "bad_address"
    assert attempt.response["blocked_address"] == "127.0.0.1"
    assert pl.webhook_requests(user) == []  # the receiver got nothing
    # The endpoint is refused by policy, not reported dead: it stays enabled.
    assert pl.address(user, "webhook").is_active
    assert rows["sms"].status == "sent"
    assert notification.status == "sent"


def _queued(redis_client: redis.Redis, queue: str) -> list[dramatiq.Message[Any]]:
    """The messages waiting on ``queue`` (not yet fetched by a worker)."""
    return [dramatiq.Message.decode(v) for v in redis_client.hvals(f"dramatiq:{queue}.msgs")]


def test_a_message_delivered_twice_reaches_the_provider_once(
    stacks: Any, pl: Any, redis_client: redis.Redis, pipeline_env: dict[str, str]
) -> None:
    stack = stacks("twice")
    stack.scheduler()
    stack.wait_ready()
    user = pl.user(sms=True)
    notification_id = pl.notify(user, ["sms"])

    # The scheduler claimed it and enqueued one message; no worker runs yet.
    delivery = pl.wait_until(
        lambda: pl.deliveries(notification_id).get("sms"), what="the scheduler's claim"
    )
    queue = delivery.queue_name
    [original] = pl.wait_until(lambda: _queued(redis_client, queue), what="the message")
    assert original.message_id == delivery.message_id
    assert original.args == (str(delivery.delivery_id),)

    # A second copy of the same message, as a redelivery or a duplicated retry makes.
    broker = RedisBroker(url=pipeline_env["CLARION_BROKER_URL"], middleware=[])
    try:
        broker.enqueue(original.copy())
    finally:
        broker.close()
    copies = _queued(redis_client, queue)
    assert len(copies) == 2
    assert {m.message_id for m in copies} == {delivery.message_id}

    stack.worker()
    stack.wait_ready()
    notification, rows = pl.wait_final(notification_id, 1)
    # Both copies were consumed; the second found the delivery already taken.
    pl.wait_until(
        lambda: not _queued(redis_client, queue) and not redis_client.llen(f"dramatiq:{queue}"),
        what="both copies to be consumed",
    )
    pl.wait_until(
        lambda: f"delivery {delivery.delivery_id} is not sendable" in stack.logs(),
        what="the duplicate to be dropped",
    )
    time.sleep(0.5)
    assert len(pl.twilio_requests(user.sms)) == 1
    assert rows["sms"].status == "sent"
    assert rows["sms"].attempts == 1
    assert len(pl.attempts(delivery.delivery_id)) == 1
    assert notification.delivery_attempts == 1


def _scheduler_counts(text: str) -> tuple[int, int, int]:
    """(notifications claimed, deliveries enqueued, reclaimed) from a scheduler's log."""
    claimed = sum(int(m) for m in re.findall(r"claimed (\d+) notifications", text))
    stopped = re.search(r"scheduler stopped: (\d+) enqueued, (\d+) reclaimed", text)
    assert stopped is not None, text[-2000:]
    return claimed, int(stopped[1]), int(stopped[2])


def test_three_schedulers_enqueue_every_delivery_exactly_once(
    stacks: Any, pl: Any, engine: sa.Engine, sandboxes: Any
) -> None:
    user = pl.user(email=True, webhook=True)
    # Half waits before the schedulers start (a backlog they race for) ...
    ids: list[uuid.UUID] = []
    for _ in range(5):
        ids += pl.insert(user, ["email", "webhook"], count=30)
    # ... in small batches, so that the three claim side by side many times.
    stack = stacks("three", CLARION_BATCH_SIZE="10")
    schedulers = [stack.scheduler() for _ in range(3)]
    stack.worker(processes=2, threads=8)
    stack.wait_ready()
    # ... and half arrives while they run: each INSERT's NOTIFY wakes all three.
    for _ in range(5):
        ids += pl.insert(user, ["email", "webhook"], count=30)
    expected = 2 * len(ids)

    def ended() -> bool:
        with engine.connect() as conn:
            return (
                conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM notification_deliveries "
                        "WHERE status IN ('sent', 'delivered', 'failed')"
                    )
                )
                == expected
            )

    pl.wait_until(ended, timeout=90, interval=0.2, what=f"{expected} deliveries to end")
    time.sleep(1.0)  # a duplicate, if any, would arrive now
    codes = stack.stop()
    assert [codes[p.name] for p in schedulers] == [0, 0, 0]

    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT status, count(*), count(message_id), max(attempts) "
                "FROM notification_deliveries GROUP BY status"
            )
        ).all()
        attempts = conn.scalar(sa.text("SELECT count(*) FROM delivery_attempts"))
        pending = conn.scalar(
            sa.text("SELECT count(*) FROM notifications WHERE dispatched_at IS NULL")
        )
    # Every delivery names the message that carried it (several share one
    # when they travel as a batch); one attempt each.
    assert {r[0]: (r[1], r[2], r[3]) for r in rows} == {
        "sent": (len(ids), len(ids), 1),
        "delivered": (len(ids), len(ids), 1),
    }
    assert attempts == expected
    assert pending == 0

    # Provider calls == deliveries: one SES call and one webhook per notification.
    wanted = {str(i) for i in ids}
    ses_deliveries = []
    for request in sandboxes.ses.requests:
        tags = {t["Name"]: t["Value"] for t in request.json().get("EmailTags", [])}
        if tags.get("clarion_notification_id") in wanted:
            ses_deliveries.append(tags["clarion_delivery_id"])
    assert len(ses_deliveries) == len(set(ses_deliveries)) == len(ids)
    hooks = [r.headers["webhook-id"] for r in pl.webhook_requests(user)]
    assert len(hooks) == len(set(hooks)) == len(ids)

    # Every scheduler's own count adds up to exactly one enqueue per delivery.
    counts = [_scheduler_counts(p.text()) for p in schedulers]
    print(
        "three schedulers: claimed "
        + ", ".join(str(c[0]) for c in counts)
        + " notifications; enqueued "
        + ", ".join(str(c[1]) for c in counts)
        + " deliveries"
    )
    assert sum(c[0] for c in counts) == len(ids)
    assert sum(1 for c in counts if c[0]) >= 2, "the schedulers did not run side by side"
    assert sum(c[1] for c in counts) == expected
    assert sum(c[2] for c in counts) == 0
