"""The Dramatiq broker, chosen by ``CLARION_BROKER_URL``.

``redis://`` (default) gives a RedisBroker, ``amqp://`` a RabbitmqBroker. The
embedded default (the demo without services) uses an in-process StubBroker.
"""

from __future__ import annotations

import uuid

import dramatiq
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import (
    AgeLimit,
    Callbacks,
    Middleware,
    Pipelines,
    Retries,
    ShutdownNotifications,
    TimeLimit,
)

from clarion.core.settings import Settings


def middleware() -> list[Middleware]:
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
    ]


#: Prefix of the broker id of a process that only enqueues (the scheduler).
#: Dramatiq stamps every Redis command's broker id into ``__heartbeats__``;
#: ``clarion status`` counts only the other ids as live workers.
ENQUEUE_ONLY_PREFIX = "enqueue-only-"


def make_broker(
    settings: Settings, *, stub: bool = False, enqueue_only: bool = False
) -> dramatiq.Broker:
    """The broker for ``settings``; ``enqueue_only`` for processes that never consume."""
    if stub:
        return StubBroker(middleware=middleware())
    url = settings.broker_url
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # max_priority is not used: priority traffic has queues of its own,
        # the same on both brokers (see workers.queues).
        return RabbitmqBroker(url=url, middleware=middleware())
    from dramatiq.brokers.redis import RedisBroker

    broker = RedisBroker(  # type: ignore[no-untyped-call]
        url=url, middleware=middleware(), namespace="dramatiq"
    )
    if enqueue_only:
        # It holds no acks, so the maintenance that requeues a dead broker's
        # unacked messages has nothing to do with this id either way.
        broker.broker_id = f"{ENQUEUE_ONLY_PREFIX}{uuid.uuid4()}"
    return broker
