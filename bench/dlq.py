"""Benchmark: the dead-letter commands at outage scale, on Redis and on RabbitMQ.

For each broker it creates N webhook deliveries that exhausted their attempts,
directly: the ``notifications`` / ``notification_deliveries`` rows (failed,
dead-lettered) with one bulk INSERT each, and one dead letter per delivery
written into the broker's dead-letter queue in Dramatiq's own layout (Redis:
``dramatiq:webhook.XQ`` + ``.XQ.msgs``; RabbitMQ: ``webhook.XQ`` with an
``x-death`` header). Then it times real ``clarion dlq`` subprocesses:

1. ``dlq requeue --all`` over ``--requeue`` dead letters (default 20,000),
   and checks that every one was requeued and left the dead-letter queue;
2. ``dlq purge --all --yes`` over as many;
3. ``dlq list --limit 20`` with ``--list`` dead letters (default 100,000):
   the database's view (the default; JSON and table, whose footer compares
   the counts with the broker's), the broker's (``--source broker``), and
   ``clarion status`` (dead letters counted on both sides).

    CLARION_BENCH_REDIS_URL=redis://127.0.0.1:6379/14 \\
    CLARION_BENCH_AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2F \\
    .venv/bin/python bench/dlq.py [--requeue 20000] [--list 100000] [--broker redis]

The Redis database is flushed and the vhost's ``webhook`` queues are purged:
point both at something of your own. Run by hand; it prints its figures.
Nothing here is a timed unit test.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import dramatiq
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from clarion import migrate  # noqa: E402
from clarion.core.db import make_engine, session_factory  # noqa: E402
from clarion.operators.deadletters import open_dead_letters  # noqa: E402
from clarion.operators.dlq import DeadLetterOps, Filters  # noqa: E402

ADMIN_URL = os.environ.get(
    "CLARION_TEST_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("CLARION_BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
AMQP_URL = os.environ.get("CLARION_BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
QUEUE = "webhook"
ERROR = "RetryableError: webhook answered 500"


def seed_rows(engine: sa.Engine, n: int) -> list[uuid.UUID]:
    """N failed, dead-lettered webhook deliveries (one per notification)."""
    user = uuid.uuid4()
    notifications = [uuid.uuid4() for _ in range(n)]
    deliveries = [uuid.uuid4() for _ in range(n)]
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (notification_id, user_id, notification_type,"
                " category, priority, title, message, delivery_channels, status, max_attempts)"
                " SELECT u, :user, 'webhook', 'bid', 'normal', 'Outbid', 'Lot 7',"
                " '[\"webhook\"]'::jsonb, 'failed', 3 FROM unnest(CAST(:ids AS uuid[])) AS u"
            ),
            {"user": user, "ids": notifications},
        )
        conn.execute(
            sa.text(
                "INSERT INTO notification_deliveries (delivery_id, notification_id, channel,"
                " status, attempts, queue_name, message_id, last_error, failed_at,"
                " dead_lettered_at) SELECT d, n, 'webhook', 'failed', 3, :q, d::text, :err,"
                " :now, :now FROM unnest(CAST(:ds AS uuid[]), CAST(:ns AS uuid[])) AS t(d, n)"
            ),
            {"q": QUEUE, "err": ERROR, "now": now, "ds": deliveries, "ns": notifications},
        )
    return deliveries


def dead_message(delivery_id: uuid.UUID) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=QUEUE,
        actor_name=f"deliver_{QUEUE}",
        args=(str(delivery_id),),
        kwargs={},
        options={"retries": 2},
        message_id=str(delivery_id),
    )


def seed_redis(deliveries: list[uuid.UUID]) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    base = time.time() * 1000 - len(deliveries)
    pipe = client.pipeline(transaction=False)
    for i, d in enumerate(deliveries):
        rid = str(uuid.uuid4())
        message = dead_message(d).copy(options={"redis_message_id": rid})
        pipe.hset(f"dramatiq:{QUEUE}.XQ.msgs", rid, message.encode())
        pipe.zadd(f"dramatiq:{QUEUE}.XQ", {rid: base + i})
        if i % 2000 == 1999:
            pipe.execute()
    pipe.execute()
    client.close()


def seed_rabbitmq(deliveries: list[uuid.UUID]) -> None:
    import pika
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    broker = RabbitmqBroker(url=AMQP_URL)
    broker.declare_queue(QUEUE, ensure=True)  # webhook, .DQ and .XQ as Dramatiq makes them
    broker.close()
    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = conn.channel()
    start = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(hours=1)
    for i, d in enumerate(deliveries):
        died = start + dt.timedelta(seconds=i * 3600 // max(1, len(deliveries)))
        headers = {"x-death": [{"queue": QUEUE, "reason": "rejected", "count": 1, "time": died}]}
        channel.basic_publish(
            exchange="",
            routing_key=f"{QUEUE}.XQ",
            body=dead_message(d).encode(),
            properties=pika.BasicProperties(delivery_mode=2, headers=headers),
        )
    while channel.queue_declare(f"{QUEUE}.XQ", passive=True).method.message_count < len(deliveries):
        time.sleep(0.1)
    conn.close()


def reset(broker: str, engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql("TRUNCATE notifications CASCADE")
    if broker == "redis":
        import redis

        redis.Redis.from_url(REDIS_URL).flushdb()
        return
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    for name in (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"):
        channel = conn.channel()
        with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
            channel.queue_purge(name)
    conn.close()


def dead_count(broker: str) -> int:
    if broker == "redis":
        import redis

        return int(redis.Redis.from_url(REDIS_URL).zcard(f"dramatiq:{QUEUE}.XQ"))
    import pika

    conn = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        return int(conn.channel().queue_declare(f"{QUEUE}.XQ", passive=True).method.message_count)
    finally:
        conn.close()


def run(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "clarion", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"clarion {' '.join(args)} exited {done.returncode}: {done.stderr}")
    return took, done.stdout


def seed(broker: str, engine: sa.Engine, n: int) -> None:
    reset(broker, engine)
    started = time.perf_counter()
    deliveries = seed_rows(engine, n)
    (seed_redis if broker == "redis" else seed_rabbitmq)(deliveries)
    print(f"  seeded {n:,} dead letters in {time.perf_counter() - started:.1f} s")


def bench_broker(broker: str, engine: sa.Engine, url: str, args: argparse.Namespace) -> None:
    env = {
        **os.environ,
        "CLARION_DATABASE_URL": url,
        "CLARION_BROKER_URL": REDIS_URL if broker == "redis" else AMQP_URL,
        "CLARION_LOG_LEVEL": "WARNING",
    }
    n = args.requeue
    print(f"{broker}:")
    seed(broker, engine, n)
    took, out = run(env, "dlq", "requeue", "--all")
    if f"requeued {n}, skipped 0, failed 0" not in out or dead_count(broker) != 0:
        raise SystemExit(f"requeue did not move all {n}: {out[-300:]}")
    with engine.connect() as conn:
        queued = conn.scalar(
            sa.text("SELECT count(*) FROM notification_deliveries WHERE status = 'queued'")
        )
    if queued != n:
        raise SystemExit(f"{queued} deliveries queued after requeue, expected {n}")
    print(f"  dlq requeue --all: {n:,} in {took:.1f} s = {n / took:,.0f}/s")

    seed(broker, engine, n)
    took, out = run(env, "dlq", "purge", "--all", "--yes")
    if f"purged {n}, skipped 0, failed 0" not in out or dead_count(broker) != 0:
        raise SystemExit(f"purge did not remove all {n}: {out[-300:]}")
    print(f"  dlq purge --all:   {n:,} in {took:.1f} s = {n / took:,.0f}/s")

    seed(broker, engine, args.list)
    took, out = run(env, "dlq", "list", "--limit", "20", "--json")
    lines = [line for line in out.splitlines() if line.strip()]
    if len(lines) != 20:
        raise SystemExit(f"list --limit 20 printed {len(lines)} lines")
    print(f"  dlq list --limit 20 with {args.list:,} dead letters: {took:.2f} s")
    took, out = run(env, "dlq", "list", "--limit", "20")
    if f"agree: {args.list} dead letters" not in out:
        raise SystemExit(f"the table's footer does not say the broker agrees: {out[-300:]}")
    print(f"  dlq list --limit 20 (table) with {args.list:,} dead letters: {took:.2f} s")
    with open_dead_letters(env["CLARION_BROKER_URL"]) as store:
        ops = DeadLetterOps(store, session_factory(engine))
        started = time.perf_counter()
        rows = list(ops.iter_rows(Filters(limit=20)))
        took = time.perf_counter() - started
    assert len(rows) == 20
    print(f"    of which the query, in process (connection included): {took * 1000:.1f} ms")
    took, _ = run(env, "dlq", "list", "--help")
    print(f"    and the start-up alone (dlq list --help): {took:.2f} s")
    took, out = run(env, "dlq", "list", "--limit", "20", "--json", "--source", "broker")
    if len([line for line in out.splitlines() if line.strip()]) != 20:
        raise SystemExit("list --source broker --limit 20 did not print 20 lines")
    print(f"  dlq list --limit 20 --source broker with {args.list:,} dead letters: {took:.2f} s")
    took, out = run(env, "status", "--json")
    if '"disagree": []' not in out:
        raise SystemExit(f"status found a disagreement: {out[-300:]}")
    print(f"  status with {args.list:,} dead letters: {took:.2f} s")
    reset(broker, engine)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requeue", type=int, default=20_000, help="dead letters to requeue")
    parser.add_argument("--list", type=int, default=100_000, help="dead letters to list")
    parser.add_argument("--broker", choices=("redis", "rabbitmq"), action="append")
    args = parser.parse_args()

    name = f"clarion_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=sa.NullPool)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        migrate.upgrade(url)
        engine = make_engine(url)
        for broker in args.broker or ["redis", "rabbitmq"]:
            bench_broker(broker, engine, url, args)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    main()
