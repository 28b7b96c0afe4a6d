"""The delivery actors: one per channel queue, the urgent lane with a higher priority.

Messages carry the delivery id only; the row holds the rest. An actor maps the
:class:`~workers.delivery.Outcome` of :meth:`Deliverer.deliver` to Dramatiq:

* sent, delivered, failed (permanent), dropped (redelivery): the message is done;
* retry: ``raise dramatiq.Retry(delay=...)``, the broker's delay queue waits,
  never a sleeping thread;
* exhausted: :class:`DeliveryExhausted` is raised and refused by
  ``retry_when``, so the message lands in its queue's dead-letter queue.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import dramatiq

from models.enums import Channel
from workers.delivery import Deliverer, Result
from workers.queues import actor_name, queue_for

#: Unexpected errors (a bug, the database down before the send) are retried
#: by Dramatiq this many times; the redelivery guard keeps that safe.
MAX_UNEXPECTED_RETRIES = 10
#: Wall-clock limit of one delivery, ms: fan-out to several push tokens or
#: webhook endpoints makes several provider calls, each with its own timeout.
#: CLARION_LEASE_SECONDS (default 10 minutes) must stay above it.
TIME_LIMIT_MS = 5 * 60 * 1000
URGENT_PRIORITY = 0
ROUTINE_PRIORITY = 100


class DeliveryExhausted(Exception):
    """Attempts ran out: the message goes to the dead-letter queue."""


def retry_when(retries: int, exc: BaseException) -> bool:
    if isinstance(exc, dramatiq.Retry):
        return True
    if isinstance(exc, DeliveryExhausted):
        return False
    return retries < MAX_UNEXPECTED_RETRIES


def declare_actors(
    broker: dramatiq.Broker, get_deliverer: Callable[[], Deliverer]
) -> dict[str, dramatiq.Actor[[str], None]]:
    """Declare the ten delivery actors on ``broker``; returns them by queue name."""

    def deliver(delivery_id: str) -> None:
        outcome = get_deliverer().deliver(uuid.UUID(delivery_id))
        if outcome.result is Result.RETRY:
            raise dramatiq.Retry(delay=outcome.delay_ms)
        if outcome.result is Result.EXHAUSTED:
            raise DeliveryExhausted(f"delivery {delivery_id}: attempts exhausted")

    actors: dict[str, dramatiq.Actor[[str], None]] = {}
    for channel in Channel:
        for urgent in (False, True):
            queue = queue_for(channel, "urgent" if urgent else "normal")
            decorate = dramatiq.actor(
                actor_name=actor_name(queue),
                queue_name=queue,
                broker=broker,
                priority=URGENT_PRIORITY if urgent else ROUTINE_PRIORITY,
                retry_when=retry_when,
                # Listed in throws: dead-lettered at once, logged without a traceback.
                throws=(DeliveryExhausted,),
                time_limit=TIME_LIMIT_MS,
            )
            actors[queue] = decorate(deliver)
    return actors
