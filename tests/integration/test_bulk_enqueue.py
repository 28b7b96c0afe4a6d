"""``workers.enqueue.enqueue_many``: one round trip per batch on Redis, Dramatiq's own layout."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import pytest
import redis
import sqlalchemy as sa
from dramatiq.brokers.redis import RedisBroker
from sqlalchemy.engine import Engine
from testdb import REDIS_URL

from clarion.core.settings import Settings
from clarion.followups import FollowUps
from scheduler.runtime import build_scheduler
from workers.actors import declare_actors
from workers.broker import middleware
from workers.enqueue import enqueue_many
from workers.runtime import get_deliverer

pytestmark = pytest.mark.redis


@pytest.fixture
def broker() -> Iterator[RedisBroker]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    client.close()
    b = RedisBroker(url=REDIS_URL, middleware=middleware(), namespace="dramatiq")  # type: ignore[no-untyped-call]
    for queue in ("bulk_a", "bulk_b"):
        b.declare_queue(queue)
    yield b
    b.close()


def messages(count: int) -> list[dramatiq.Message[Any]]:
    return [
        dramatiq.Message(
            queue_name="bulk_a" if i % 3 else "bulk_b",
            actor_name="deliver",
            args=(f"delivery-{i}",),
            kwargs={},
            options={},
        )
        for i in range(count)
    ]


def exec_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return int(stats.get("cmdstat_exec", {}).get("calls", 0))


def test_a_batch_is_one_transaction_and_lands_in_order(broker: RedisBroker) -> None:
    client = broker.client
    batch = messages(300)
    taken: list[str] = []
    before = exec_calls(client)
    enqueue_many(broker, batch, lambda m: taken.append(m.message_id), batch_size=1000)
    # 300 messages, one MULTI/EXEC: one round trip for the batch.
    assert exec_calls(client) - before == 1
    assert taken == [m.message_id for m in batch]
    for queue in ("bulk_a", "bulk_b"):
        expected = [m for m in batch if m.queue_name == queue]
        ids = client.lrange(f"dramatiq:{queue}", 0, -1)
        payloads = client.hmget(f"dramatiq:{queue}.msgs", ids)
        stored = [dramatiq.Message.decode(p) for p in payloads if p is not None]
        assert [m.message_id for m in stored] == [m.message_id for m in expected]
        assert [m.args for m in stored] == [m.args for m in expected]
        # Every stored copy has an id of its own, as RedisBroker.enqueue gives it.
        assert [m.options["redis_message_id"].encode() for m in stored] == ids
        assert len(set(ids)) == len(ids)


def test_batches_are_cut_at_the_batch_size(broker: RedisBroker) -> None:
    before = exec_calls(broker.client)
    enqueue_many(broker, messages(250), lambda m: None, batch_size=100)
    assert exec_calls(broker.client) - before == 3
    assert broker.client.llen("dramatiq:bulk_a") + broker.client.llen("dramatiq:bulk_b") == 250


def test_a_consumer_takes_them_as_its_own(broker: RedisBroker) -> None:
    batch = messages(30)
    enqueue_many(broker, batch, lambda m: None)
    expected = [m.message_id for m in batch if m.queue_name == "bulk_b"]
    consumer = broker.consume("bulk_b", prefetch=100, timeout=200)
    got: list[str] = []
    for proxy in consumer:
        if proxy is None:
            break
        got.append(proxy.message_id)
        consumer.ack(proxy)
    consumer.close()
    assert got == expected


def test_an_unreachable_redis_takes_nothing_and_raises() -> None:
    b = RedisBroker(url="redis://127.0.0.1:1/0", middleware=middleware())  # type: ignore[no-untyped-call]
    taken: list[str] = []
    try:
        with pytest.raises(redis.ConnectionError):
            enqueue_many(b, messages(5), lambda m: taken.append(m.message_id))
    finally:
        b.close()
    assert taken == []


@pytest.mark.postgres
@pytest.mark.parametrize(("delivery_batch", "sizes"), [(1, [1] * 120), (50, [50, 50, 20])])
def test_the_scheduler_enqueues_a_claimed_batch_in_one_round_trip(
    pg_url: str, clean_db: Engine, broker: RedisBroker, delivery_batch: int, sizes: list[int]
) -> None:
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels) SELECT :u, 'in_app', 'bid', 'normal',"
                " 'Batch ' || g, 'Batch message ' || g, '[\"in_app\"]'::jsonb"
                " FROM generate_series(1, 120) AS g"
            ),
            {"u": uuid.uuid4()},
        )
    settings = Settings.from_env(
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_BROKER_URL": REDIS_URL,
            "CLARION_BATCH_SIZE": "500",
            "CLARION_DELIVERY_BATCH": str(delivery_batch),
        }
    )
    scheduler = build_scheduler(
        settings, broker, declare_actors(broker, get_deliverer), follow_ups=FollowUps(settings)
    )
    before = exec_calls(broker.client)
    try:
        assert scheduler.run_once(sweep=False) == 120
    finally:
        engine = scheduler.claims.sessions.kw["bind"]
        engine.dispose()
    assert exec_calls(broker.client) - before == 1
    assert broker.client.llen("dramatiq:in_app") == len(sizes)
    assert scheduler.unsent == 0
    # Each message carries its deliveries (one id, or a list for the batch
    # actor), and each delivery row names the message that carries it.
    carried: dict[str, str] = {}
    found_sizes = []
    for raw in broker.client.hvals("dramatiq:in_app.msgs"):
        message = dramatiq.Message.decode(raw)
        (arg,) = message.args
        ids = arg if isinstance(arg, list) else [arg]
        assert message.actor_name == (
            "deliver_in_app_batch" if isinstance(arg, list) else "deliver_in_app"
        )
        found_sizes.append(len(ids))
        carried.update(dict.fromkeys(ids, message.message_id))
    assert sorted(found_sizes, reverse=True) == sizes
    with clean_db.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT delivery_id, message_id FROM notification_deliveries")
        ).all()
    assert {str(r.delivery_id): r.message_id for r in rows} == carried
