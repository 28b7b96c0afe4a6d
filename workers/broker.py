"""The Dramatiq broker, chosen by ``CLARION_BROKER_URL``.

``redis://`` (default) gives a RedisBroker, ``amqp://`` a RabbitmqBroker. The
embedded default (the demo without services) uses an in-process StubBroker.
"""

from __future__ import annotations

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

from clarion.settings import Settings


def middleware() -> list[Middleware]:
    return [
        AgeLimit(),
        TimeLimit(),
        ShutdownNotifications(),
        Callbacks(),
        Pipelines(),
        Retries(),
    ]


def make_broker(settings: Settings, *, stub: bool = False) -> dramatiq.Broker:
    if stub:
        return StubBroker(middleware=middleware())
    url = settings.broker_url
    if url.startswith(("amqp://", "amqps://")):
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        # max_priority is not used: priority traffic has queues of its own,
        # the same on both brokers (see workers.queues).
        return RabbitmqBroker(url=url, middleware=middleware())
    from dramatiq.brokers.redis import RedisBroker

    return RedisBroker(  # type: ignore[no-untyped-call]
        url=url, middleware=middleware(), namespace="dramatiq"
    )
