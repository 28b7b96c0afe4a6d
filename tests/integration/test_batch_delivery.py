"""Deliveries in batches: one guard and one write-back for a message's deliveries,
their provider calls in flight together, and each delivery's own outcome."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from typing import ClassVar

import dramatiq
import pytest
import sqlalchemy as sa
from dramatiq.brokers.stub import StubBroker
from sqlalchemy.engine import Engine

from channels.base import OutgoingMessage, Provider, Receipt, RetryableError
from channels.registry import Providers
from clarion.core.db import session_factory
from clarion.core.settings import Settings
from clarion.operators.deadletters import DeadLetter, requeue_copy
from models.claims import Claims
from models.enums import Channel
from models.writeback import SendJob, WriteBack, WriteBackStore
from workers.actors import batch_actors, declare_actors
from workers.broker import middleware
from workers.delivery import Deliverer, Result
from workers.queues import DEAD_LETTER_OPTION
from workers.retry_policy import RetryPolicy
from workers.sending import Sender

pytestmark = pytest.mark.postgres


class ByTitle(Provider):
    """Answers by the notification's title: ``ok``, ``retry`` (a retryable error)."""

    name = "by_title"
    channel: ClassVar[Channel] = Channel.WEBHOOK

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def send(self, message: OutgoingMessage) -> Receipt:
        with self._lock:
            self.calls.append(message.title)
        if message.title.startswith("retry"):
            raise RetryableError("provider unavailable", provider=self.name)
        return Receipt(
            provider=self.name,
            provider_message_id=f"m-{message.delivery_id}",
            response={"ok": True},
            delivered=True,
        )


class Gate(Provider):
    """Every call waits until ``parties`` calls are in flight at once."""

    name = "gate"
    channel: ClassVar[Channel] = Channel.WEBHOOK

    def __init__(self, parties: int, timeout: float) -> None:
        self.barrier = threading.Barrier(parties, timeout=timeout)

    def send(self, message: OutgoingMessage) -> Receipt:
        self.barrier.wait()
        return Receipt(provider=self.name, provider_message_id="x", response={}, delivered=True)


class Counting:
    """A write-back store that counts its transactions."""

    def __init__(self, store: WriteBackStore) -> None:
        self.store = store
        self.takes: list[int] = []
        self.writes: list[int] = []

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]:
        self.takes.append(len(delivery_ids))
        return self.store.start_sending_many(delivery_ids, lease_seconds=lease_seconds)

    def write_back_many(self, items: Sequence[WriteBack]) -> None:
        self.writes.append(len(items))
        self.store.write_back_many(items)

    def disable_addresses(self, address_ids: object, reason: str) -> None:
        raise AssertionError("no address is disabled here")


def webhook_deliveries(engine: Engine, titles: Sequence[tuple[str, int]]) -> list[uuid.UUID]:
    """One webhook delivery per (title, max_attempts), each user with an endpoint."""
    with engine.begin() as conn:
        for title, max_attempts in titles:
            user = uuid.uuid4()
            conn.execute(
                sa.text(
                    "INSERT INTO notifications (user_id, notification_type, category, priority,"
                    " title, message, delivery_channels, max_attempts) VALUES (:u, 'webhook',"
                    " 'system', 'normal', :t, 'M', '[\"webhook\"]', :m)"
                ),
                {"u": user, "t": title, "m": max_attempts},
            )
            conn.execute(
                sa.text(
                    "INSERT INTO user_addresses (user_id, channel, address)"
                    " VALUES (:u, 'webhook', 'https://hooks.example.com/in')"
                ),
                {"u": user},
            )
    claimed = Claims(session_factory(engine)).claim_due(
        batch_size=100,
        lease_seconds=600,
        queue_for=lambda c, p: Channel(c).value,
        make_message=lambda d, q: uuid.uuid4().hex,
    )
    by_title = {}
    with engine.connect() as conn:
        for row in conn.execute(
            sa.text(
                "SELECT d.delivery_id, n.title FROM notification_deliveries d"
                " JOIN notifications n USING (notification_id)"
            )
        ):
            by_title[row.title] = row.delivery_id
    assert len(claimed) == len(titles)
    return [by_title[title] for title, _ in titles]


def make_deliverer(store: object, provider: Provider, sender: Sender | None = None) -> Deliverer:
    return Deliverer(
        store,  # type: ignore[arg-type]
        Providers(Settings(), {Channel.WEBHOOK: provider}),
        policy=RetryPolicy(min_backoff=0.01, max_backoff=0.02),
        lease_seconds=60,
        sender=sender,
    )


def rows(engine: Engine) -> dict[str, tuple[str, int, bool]]:
    with engine.connect() as conn:
        return {
            r.title: (r.status, r.attempts, r.dead)
            for r in conn.execute(
                sa.text(
                    "SELECT n.title, d.status, d.attempts, d.dead_lettered_at IS NOT NULL AS dead"
                    " FROM notification_deliveries d JOIN notifications n USING (notification_id)"
                )
            )
        }


def test_a_batch_shares_one_guard_and_one_write_back_and_keeps_each_outcome(
    clean_db: Engine,
) -> None:
    ids = webhook_deliveries(
        clean_db, [("ok-1", 3), ("retry-1", 3), ("retry-last", 1), ("ok-2", 3)]
    )
    store = Counting(WriteBackStore(clean_db))
    provider = ByTitle()
    d = make_deliverer(store, provider, Sender(4))
    gone = uuid.uuid4()  # no such delivery: dropped, as a redelivered message would be
    outcomes = d.deliver_many([*ids, gone])
    assert store.takes == [5]
    assert store.writes == [4]
    assert [outcomes[i].result for i in ids] == [
        Result.DELIVERED,
        Result.RETRY,
        Result.EXHAUSTED,
        Result.DELIVERED,
    ]
    assert outcomes[gone].result is Result.DROPPED
    assert outcomes[ids[1]].delay_ms > 0
    assert sorted(provider.calls) == ["ok-1", "ok-2", "retry-1", "retry-last"]
    assert rows(clean_db) == {
        "ok-1": ("delivered", 1, False),
        "ok-2": ("delivered", 1, False),
        "retry-1": ("queued", 1, False),
        "retry-last": ("failed", 1, True),
    }
    # The same batch again: nothing is sendable but the one waiting for its retry.
    again = d.deliver_many(ids)
    assert [again[i].result for i in ids] == [
        Result.DROPPED,
        Result.RETRY,
        Result.DROPPED,
        Result.DROPPED,
    ]


def test_a_batchs_provider_calls_are_in_flight_together(clean_db: Engine) -> None:
    ids = webhook_deliveries(clean_db, [(f"ok-{i}", 3) for i in range(8)])
    # All eight calls must be waiting at once for any of them to pass the gate.
    d = make_deliverer(WriteBackStore(clean_db), Gate(8, timeout=30), Sender(8))
    outcomes = d.deliver_many(ids)
    assert {o.result for o in outcomes.values()} == {Result.DELIVERED}


def test_one_call_at_a_time_cannot_pass_the_gate(clean_db: Engine) -> None:
    """The gate is a real check: without the pool the calls come one by one and fail."""
    ids = webhook_deliveries(clean_db, [(f"ok-{i}", 3) for i in range(3)])
    d = make_deliverer(WriteBackStore(clean_db), Gate(3, timeout=0.5), Sender(1))
    outcomes = d.deliver_many(ids)
    assert {o.result for o in outcomes.values()} == {Result.RETRY}


def test_the_batch_actor_sends_retries_and_dead_letters_as_single_messages(
    clean_db: Engine,
) -> None:
    ids = webhook_deliveries(clean_db, [("ok-1", 3), ("retry-1", 2), ("retry-last", 1)])
    broker = StubBroker(middleware=middleware())
    broker.emit_after("process_boot")
    provider = ByTitle()
    deliverer = make_deliverer(WriteBackStore(clean_db), provider, Sender(4))
    singles = declare_actors(broker, lambda: deliverer)
    batch = batch_actors(broker, singles)["webhook"]
    worker = dramatiq.Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        batch.send([str(i) for i in ids])
        broker.join("webhook", fail_fast=False, timeout=30_000)
        worker.join()
    finally:
        worker.stop()
    # retry-1 failed once in the batch, then again as a single message: its
    # two attempts are spent, and it is dead-lettered like retry-last.
    assert rows(clean_db) == {
        "ok-1": ("delivered", 1, False),
        "retry-1": ("failed", 2, True),
        "retry-last": ("failed", 1, True),
    }
    dead = broker.dead_letters_by_queue["webhook"]
    assert sorted(m.args[0] for m in dead) == sorted([str(ids[1]), str(ids[2])])
    # Every dead letter is a single delivery's message for the single actor,
    # as the operators' dlq commands expect.
    assert {m.actor_name for m in dead} == {"deliver_webhook"}
    marked = next(m for m in dead if m.args[0] == str(ids[2]))
    assert marked.options.get(DEAD_LETTER_OPTION) is True
    # Each row names the message that carries it now: the dead letter.
    with clean_db.connect() as conn:
        named = {
            r.delivery_id: r.message_id
            for r in conn.execute(
                sa.text("SELECT delivery_id, message_id FROM notification_deliveries")
            )
        }
    assert {named[ids[1]], named[ids[2]]} == {m.message_id for m in dead}
    letter = DeadLetter(
        message_id=marked.message_id,
        queue="webhook",
        actor=marked.actor_name,
        args=tuple(marked.args),
        died_at=None,
        message=marked._message,
    )
    assert letter.delivery_id == ids[2]
    # A requeued copy is delivered again, not dead-lettered at once.
    assert DEAD_LETTER_OPTION not in requeue_copy(letter).options
