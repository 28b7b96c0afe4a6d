"""A bare no-op Dramatiq actor on the same broker: the ceiling Clarion is compared with.

The broker is ``CLARION_BROKER_URL`` (Redis or ``amqp://``); the count of messages
done is kept in Redis (``CLARION_BENCH_REDIS_URL``, else the broker's URL).
"""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["CLARION_BROKER_URL"]
broker: dramatiq.Broker = (
    RabbitmqBroker(url=URL) if URL.startswith("amqp") else RedisBroker(url=URL)
)
dramatiq.set_broker(broker)
counter = redis.Redis.from_url(os.environ.get("CLARION_BENCH_REDIS_URL", URL))
DONE_KEY = "bench:noop:done"


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop(i: int) -> None:
    counter.incr(DONE_KEY)
