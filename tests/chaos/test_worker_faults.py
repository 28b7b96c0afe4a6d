"""Workers under faults: killed with SIGKILL or stopped with SIGTERM in the middle of a
load, and a provider that throttles with Retry-After.

Each scenario drives real ``clarion worker`` / ``clarion scheduler`` processes
through the webhook sandbox and then checks the books: every notification
ended delivered, and the provider calls per notification (counted by the
``webhook-id`` the receiver saw) are what the README promises: at least one,
and duplicates only for deliveries that were in flight in a killed worker.
"""

from __future__ import annotations

import collections
import os
import signal
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from harness import wait_until

from channels.sandboxes.http import Fault

# Long scenarios of many real processes and CLI runs: the default 120 s guard
# against a hang is too close to their duration on a loaded machine.
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

THREADS = 8
#: Sending threads of the worker process (CLARION_SEND_CONCURRENCY).
SENDERS = 8
#: Short leases: a delivery orphaned by a dead worker is queued again within seconds.
FAST_RECOVERY = {
    "CLARION_LEASE_SECONDS": "3",
    "CLARION_QUEUED_LEASE_SECONDS": "4",
    "CLARION_POLL_INTERVAL": "0.5",
    "CLARION_SEND_CONCURRENCY": str(SENDERS),
}


def statuses(pl: Any, ids: list[uuid.UUID]) -> collections.Counter[str]:
    with pl.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status FROM notifications WHERE notification_id = ANY(:ids)"),
            {"ids": ids},
        ).scalars()
        return collections.Counter(str(s) for s in rows)


def calls_per_notification(pl: Any, user: Any) -> collections.Counter[str]:
    """Provider calls per webhook-id (one id per delivery, the same on every retry)."""
    return collections.Counter(r.headers.get("webhook-id", "") for r in pl.webhook_requests(user))


def delivery_ids(pl: Any, ids: list[uuid.UUID]) -> set[str]:
    with pl.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT delivery_id FROM notification_deliveries WHERE notification_id = ANY(:ids)"
            ),
            {"ids": ids},
        ).scalars()
        return {f"msg_{r.hex}" for r in rows}  # the webhook-id of each delivery


def wait_all(pl: Any, ids: list[uuid.UUID], status: str, timeout: float) -> None:
    wait_until(
        lambda: statuses(pl, ids)[status] == len(ids),
        timeout=timeout,
        what=f"{len(ids)} notifications {status} (now {dict(statuses(pl, ids))})",
    )


def test_a_worker_killed_under_load_loses_nothing(stacks: Any, pl: Any) -> None:
    st = stacks("sigkill", **FAST_RECOVERY)
    st.worker(threads=THREADS)
    st.scheduler()
    st.wait_ready()
    pl.sandboxes.webhook.latency = 0.05  # requests in flight when the worker dies
    try:
        user = pl.user(webhook=True)
        ids = pl.insert(user, ["webhook"], count=300)
        wait_until(lambda: statuses(pl, ids)["delivered"] >= 60, 60, "a fifth delivered")
        worker = st.processes[0]
        os.killpg(worker.popen.pid, signal.SIGKILL)
        worker.popen.wait(10)
        st.processes.remove(worker)  # not one to stop cleanly at the end
        st.worker(threads=THREADS)
        st.wait_ready()
        wait_all(pl, ids, "delivered", timeout=120)
    finally:
        pl.sandboxes.webhook.latency = 0.0
    calls = calls_per_notification(pl, user)
    expected = delivery_ids(pl, ids)
    assert expected <= set(calls), "a delivery never reached the provider"
    duplicates = sum(n - 1 for key, n in calls.items() if key in expected)
    # Only what the killed worker had in flight may be sent twice: one call per
    # sending thread, and one per worker thread (it makes one of its batch's
    # calls itself); the rest of its batches were taken but not sent.
    assert duplicates <= THREADS + SENDERS, (duplicates, calls.most_common(3))


def test_a_worker_stopped_mid_load_finishes_its_sends_and_loses_nothing(
    stacks: Any, pl: Any
) -> None:
    st = stacks("sigterm", **FAST_RECOVERY)
    st.worker(threads=THREADS)
    st.scheduler()
    st.wait_ready()
    pl.sandboxes.webhook.latency = 0.05
    try:
        user = pl.user(webhook=True)
        ids = pl.insert(user, ["webhook"], count=300)
        wait_until(lambda: statuses(pl, ids)["delivered"] >= 60, 60, "a fifth delivered")
        worker = st.processes[0]
        worker.popen.send_signal(signal.SIGTERM)
        assert worker.popen.wait(30) == 0, worker.text()[-3000:]
        st.processes.remove(worker)  # stopped and checked: the new one replaces it
        st.worker(threads=THREADS)
        st.wait_ready()
        wait_all(pl, ids, "delivered", timeout=120)
    finally:
        pl.sandboxes.webhook.latency = 0.0
    calls = calls_per_notification(pl, user)
    expected = delivery_ids(pl, ids)
    assert expected <= set(calls)
    # A graceful stop finishes what it started and hands back what it prefetched.
    assert {key: n for key, n in calls.items() if key in expected and n > 1} == {}


def test_a_throttling_provider_is_not_called_before_its_retry_after(stacks: Any, pl: Any) -> None:
    st = stacks("throttle")
    st.worker(threads=THREADS)
    st.scheduler()
    st.wait_ready()
    retry_after = 2.0
    pl.sandboxes.webhook.fail(Fault(status=429, retry_after=retry_after), times=40)
    user = pl.user(webhook=True)
    ids = pl.insert(user, ["webhook"], count=100)
    wait_all(pl, ids, "delivered", timeout=90)
    by_id: dict[str, list[float]] = collections.defaultdict(list)
    for request in pl.webhook_requests(user):
        by_id[request.headers.get("webhook-id", "")].append(request.at)
    throttled = {key: sorted(at) for key, at in by_id.items() if len(at) > 1}
    assert len(throttled) == 40, len(throttled)  # every 429 was retried, once
    for key, times in throttled.items():
        assert times[1] - times[0] >= retry_after, (key, times)


def test_a_provider_outage_of_30_seconds_fails_no_notification(stacks: Any, pl: Any) -> None:
    # The production retry settings: 3 attempts, backoff from 5 s. Without the
    # outage rule, three attempts would all fall inside the outage.
    st = stacks(
        "outage",
        CLARION_RETRY_MIN_BACKOFF="5",
        CLARION_RETRY_MAX_BACKOFF="3600",
        CLARION_POLL_INTERVAL="0.5",
    )
    st.worker(threads=THREADS)
    st.scheduler()
    st.wait_ready()
    hook = pl.sandboxes.webhook
    hook.fail(Fault(status=503), times=1_000_000)
    user = pl.user(webhook=True)
    ids = pl.insert(user, ["webhook"], count=60)
    wait_until(
        lambda: len(pl.webhook_requests(user)) >= 60,
        30,
        "every delivery tried once in the outage",
    )
    # The outage lasts 30 s from its first failed request.
    first = min(r.at for r in pl.webhook_requests(user))
    wait_until(lambda: time.time() >= first + 30, 40, "the outage's 30 s to pass")
    assert statuses(pl, ids)["failed"] == 0, "a notification failed inside the outage"
    hook.clear_faults()

    def all_delivered() -> bool:
        now = statuses(pl, ids)
        assert now["failed"] == 0, f"a notification failed after the outage: {dict(now)}"
        return now["delivered"] == len(ids)

    wait_until(all_delivered, 120, "every notification delivered after the outage")
    with pl.engine.connect() as conn:
        failed_attempts = conn.execute(
            sa.text(
                "SELECT count(*) FROM delivery_attempts a JOIN notification_deliveries d "
                "USING (delivery_id) WHERE d.notification_id = ANY(:ids) "
                "AND a.outcome <> 'delivered'"
            ),
            {"ids": ids},
        ).scalar_one()
    assert failed_attempts >= 60  # every delivery met the outage at least once
