"""Requeue and purge in batches: a batch interrupted half-way, ``--rate``, ``--limit``.

The batch interrupted half-way is driven by real failures through real worker
processes on both brokers: the database step of a whole batch committed, the
broker step done for half of it, then ``clarion dlq requeue --all`` finishes
the rest, and every delivery reaches the provider once.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from harness import Stack, wait_until
from operators_support import BROKERS, Ops

from channels.sandboxes.http import Fault
from clarion.core.errors import ValidationError
from clarion.operators.deadletters import DeadLetter, open_dead_letters, requeue_copy
from clarion.operators.dlq import DeadLetterOps, Filters, Pacer, parse_rate
from models.deadletters import DeadLetterRows, PurgeStep, RequeueItem, RequeueStep
from models.enums import Channel, DeliveryStatus
from models.notifications import Delivery


def dead_in_broker(ops: Ops) -> dict[str, str]:
    with open_dead_letters(BROKERS[ops.broker]) as store:
        return {e.message_id: str(e.delivery_id) for e in store.entries()}


@pytest.mark.postgres
@pytest.mark.redis
def test_a_batch_interrupted_half_way_is_finished_by_the_next_run(ops: Ops, stack: Stack) -> None:
    ops.farm.ses.fail(Fault(status=503), times=10_000)
    stack.start()
    nids = [ops.notify(ops.user(), ["email"]) for _ in range(6)]
    for nid in nids:
        ops.wait_status(nid, "email", "failed")
    wait_until(lambda: len(dead_in_broker(ops)) == 6, timeout=30, what="6 dead letters")
    # The provider recovers before anything moves: a copy the interrupted run
    # moved is consumed at once, and must be sent, not dead-lettered again.
    ops.farm.ses.reset()

    with open_dead_letters(BROKERS[ops.broker]) as store:
        dlq = DeadLetterOps(store, ops.sessions)
        # --limit reads no more than it shows: count what the listing pulls.
        pulled = []
        newest = store.newest

        def counted(*args: Any, **kwargs: Any) -> Iterator[DeadLetter]:
            for letter in newest(*args, **kwargs):
                pulled.append(letter)
                yield letter

        store.newest = counted  # type: ignore[method-assign]
        assert len(dlq.select(Filters(limit=2))) == 2
        assert len(pulled) == 2
        store.newest = newest  # type: ignore[method-assign]

        # One batch of four: its database step commits, then the run dies
        # after the broker moved two of them.
        batch = [e.letter for e in dlq.select(Filters())][:4]
        copies = [requeue_copy(letter) for letter in batch]
        steps = DeadLetterRows(ops.sessions).requeue_dead_letters(
            [
                RequeueItem(letter.delivery_id, copy.message_id, letter.queue)  # type: ignore[arg-type]
                for letter, copy in zip(batch, copies, strict=True)
            ],
            lease_seconds=3600,
        )
        assert steps == [RequeueStep.REQUEUED] * 4
        assert store.move_many(list(zip(batch[:2], copies[:2], strict=True))) == [True, True]
    left = dead_in_broker(ops)
    assert len(left) == 4
    assert not {letter.message_id for letter in batch[:2]} & set(left)

    result = ops.cli_json("dlq", "requeue", "--all", "--rate", "20/s")
    assert result[-1] == {"dry_run": False, "requeued": 4, "skipped": 0, "failed": 0}
    reasons = {r["message_id"]: r["reason"] for r in result[:-1]}
    assert {reasons[letter.message_id] for letter in batch[2:]} == {
        "finished an interrupted requeue"
    }
    assert list(reasons.values()).count("finished an interrupted requeue") == 2
    again = ops.cli_json("dlq", "requeue", "--all")
    assert again == [{"dry_run": False, "requeued": 0, "skipped": 0, "failed": 0}]
    for nid in nids:
        assert ops.wait_status(nid, "email", "sent").attempts == 1
    for nid in nids:
        assert ops.ses_requests(nid) == 1, f"{nid} was sent more than once"
    assert dead_in_broker(ops) == {}


@pytest.mark.postgres
@pytest.mark.redis
def test_a_bad_rate_is_refused_before_anything_moves(ops: Ops) -> None:
    done = ops.cli("dlq", "requeue", "--all", "--rate", "fast")
    assert done.returncode == 2
    assert "--rate" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    env = ops.cli("dlq", "requeue", "--all", env={"CLARION_DLQ_RATE": "0/s"})
    assert env.returncode == 2 and "--rate" in env.stderr


def test_parse_rate() -> None:
    assert parse_rate("200/s") == 200
    assert parse_rate("200") == 200
    assert parse_rate("6000/m") == 100
    assert parse_rate("36000/h") == 10
    for bad in ("", "0", "-5/s", "5/d", "fast"):
        with pytest.raises(ValidationError, match="--rate"):
            parse_rate(bad)


def test_pacer_holds_a_run_to_its_rate() -> None:
    now = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    pacer = Pacer(50, clock=lambda: now[0], sleep=sleep)
    size = pacer.batch_size(500)
    assert size == 5  # a tenth of a second's worth
    for _ in range(20):  # 100 dead letters, no time spent working
        pacer.wait_for(size)
    assert slept and now[0] - 100.0 == pytest.approx(19 * 0.1)
    # A run slower than the rate is never held back.
    slow = Pacer(50, clock=lambda: now[0], sleep=sleep)
    slept.clear()
    for _ in range(5):
        slow.wait_for(5)
        now[0] += 1.0
    assert slept == []


def dead_lettered_delivery(ops: Ops) -> uuid.UUID:
    """A webhook delivery that failed and was dead-lettered, written directly."""
    nid = ops.notify(ops.user(email=False), ["webhook"])
    delivery_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    with ops.sessions.begin() as s:
        s.add(
            Delivery(
                delivery_id=delivery_id,
                notification_id=nid,
                channel=Channel.WEBHOOK,
                status=DeliveryStatus.FAILED,
                attempts=1,
                last_error="RetryableError: webhook answered 500",
                failed_at=now,
                dead_lettered_at=now,
            )
        )
    return delivery_id


@pytest.mark.postgres
def test_two_dead_letters_of_one_delivery_in_one_batch_move_once(ops: Ops) -> None:
    rows = DeadLetterRows(ops.sessions)
    twice, once = dead_lettered_delivery(ops), dead_lettered_delivery(ops)
    items = [
        RequeueItem(twice, "copy-a", "webhook"),
        RequeueItem(once, "copy-c", "webhook"),
        RequeueItem(twice, "copy-b", "webhook"),
        RequeueItem(uuid.uuid4(), "copy-d", "webhook"),
    ]
    steps = rows.requeue_dead_letters(items, lease_seconds=60)
    assert steps == [
        RequeueStep.REQUEUED,
        RequeueStep.REQUEUED,
        RequeueStep.STALE,
        RequeueStep.MISSING,
    ]
    with ops.sessions() as s:
        first, other = s.get(Delivery, twice), s.get(Delivery, once)
        assert first is not None and other is not None
        assert (first.status, first.message_id) == (DeliveryStatus.QUEUED, "copy-a")
        assert (other.status, other.message_id) == (DeliveryStatus.QUEUED, "copy-c")
    # The same batch again, as a run resuming it would send: only the copies
    # recorded in the rows resume.
    assert rows.requeue_dead_letters(items, lease_seconds=60) == [
        RequeueStep.RESUMED,
        RequeueStep.RESUMED,
        RequeueStep.STALE,
        RequeueStep.MISSING,
    ]

    gone = dead_lettered_delivery(ops)
    assert rows.purge_dead_letters([gone, gone, uuid.uuid4()]) == [
        PurgeStep.PURGED,
        PurgeStep.STALE,
        PurgeStep.MISSING,
    ]
