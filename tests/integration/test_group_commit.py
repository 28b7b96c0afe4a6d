"""Group commit: many threads' guards and write-backs share transactions, same results."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from clarion.core.clock import utcnow
from clarion.core.db import session_factory
from models.claims import Claims
from models.enums import AttemptOutcome, Channel, DeliveryStatus
from models.writeback import AttemptRecord, WriteBack, WriteBackStore
from workers.batching import GroupCommitter

pytestmark = pytest.mark.postgres


def make_deliveries(engine: Engine, count: int) -> list[uuid.UUID]:
    repo = Claims(session_factory(engine))
    user = uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
                " 'T', 'M', '[\"in_app\"]'::jsonb FROM generate_series(1, :n)"
            ),
            {"u": user, "n": count},
        )
    claims = repo.claim_due(
        batch_size=count,
        lease_seconds=600,
        queue_for=lambda c, p: Channel(c).value,
        make_message=lambda d, q: uuid.uuid4().hex,
    )
    assert len(claims) == count
    return [c.delivery_id for c in claims]


def accepted() -> AttemptRecord:
    return AttemptRecord(
        outcome=AttemptOutcome.DELIVERED,
        provider="in_app",
        started_at=utcnow(),
        duration_ms=1,
        response={"receivers": 0},
        provider_message_id="x",
    )


def test_threads_share_batches_and_each_delivery_is_taken_once(clean_db: Engine) -> None:
    ids = make_deliveries(clean_db, 200)
    committer = GroupCommitter(WriteBackStore(clean_db))
    # Every id asked for twice, as a duplicated message would be.
    requests = ids + ids
    start = threading.Barrier(16)

    def take(delivery_id: uuid.UUID) -> tuple[uuid.UUID, object]:
        return delivery_id, committer.start_sending(delivery_id, lease_seconds=60)

    with ThreadPoolExecutor(16, initializer=start.wait) as pool:
        results = list(pool.map(take, requests))
    jobs = [job for _, job in results if job is not None]
    assert sorted(j.delivery_id for j in jobs) == sorted(ids)  # each handed out once
    assert max(committer.batches) > 1, committer.batches  # threads really shared batches

    with ThreadPoolExecutor(16) as pool:
        list(
            pool.map(
                lambda job: committer.write_back(
                    WriteBack(job, (accepted(),), DeliveryStatus.DELIVERED)
                ),
                jobs,
            )
        )
    committer.close()
    with clean_db.connect() as conn:
        statuses = conn.execute(
            sa.text("SELECT status, count(*) FROM notifications GROUP BY status")
        ).all()
        attempts = conn.execute(sa.text("SELECT count(*) FROM delivery_attempts")).scalar_one()
        delivered_rows = conn.execute(
            sa.text(
                "SELECT count(*) FROM notification_deliveries"
                " WHERE status = 'delivered' AND attempts = 1 AND delivered_at IS NOT NULL"
            )
        ).scalar_one()
    assert statuses == [("delivered", 200)]
    assert attempts == 200
    assert delivered_rows == 200


def test_a_bad_item_fails_alone(clean_db: Engine) -> None:
    ids = make_deliveries(clean_db, 4)
    repo = WriteBackStore(clean_db)
    taken = repo.start_sending_many(ids, lease_seconds=60)
    jobs = [job for job in taken.values() if job is not None]
    assert len(jobs) == 4
    good, bad = jobs[:3], jobs[3]
    # An attempt row the database refuses (a provider name longer than its
    # column): it must not take the good write-backs down with it.
    refused = dataclasses.replace(accepted(), provider="p" * 80)
    committer = GroupCommitter(repo)
    items = [WriteBack(job, (accepted(),), DeliveryStatus.DELIVERED) for job in good]
    items.insert(1, WriteBack(bad, (refused,), DeliveryStatus.DELIVERED))
    errors: list[BaseException] = []
    barrier = threading.Barrier(len(items))

    def write(item: WriteBack) -> None:
        barrier.wait()
        try:
            committer.write_back(item)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in items]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    committer.close()
    assert len(errors) == 1 and isinstance(errors[0], sa.exc.DataError), errors
    with clean_db.connect() as conn:
        delivered = conn.execute(
            sa.text("SELECT count(*) FROM notification_deliveries WHERE status = 'delivered'")
        ).scalar_one()
    assert delivered == 3


def test_expired_notification_is_cancelled_not_handed_out(clean_db: Engine) -> None:
    ids = make_deliveries(clean_db, 1)
    with clean_db.begin() as conn:
        conn.execute(
            sa.text("UPDATE notifications SET expires_at = :t"),
            {"t": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)},
        )
    repo = WriteBackStore(clean_db)
    assert repo.start_sending(ids[0], lease_seconds=60) is None
    with clean_db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT d.status, n.status, n.error_message FROM notification_deliveries d"
                " JOIN notifications n USING (notification_id)"
            )
        ).one()
    assert row == ("cancelled", "cancelled", "expired before it was sent")
