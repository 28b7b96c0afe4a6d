"""A bare no-op Dramatiq actor on the same broker: the ceiling Clarion is compared with."""

from __future__ import annotations

import os

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

URL = os.environ["CLARION_BROKER_URL"]
broker = RedisBroker(url=URL)
dramatiq.set_broker(broker)
counter = redis.Redis.from_url(URL)


@dramatiq.actor(queue_name="noop", max_retries=0)
def noop(i: int) -> None:
    counter.incr("bench:noop:done")
