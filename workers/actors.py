"""The delivery actors: per channel queue, the urgent lane with a higher priority.

Each queue has two actors. ``deliver_<queue>`` takes one delivery id;
``deliver_<queue>_batch`` takes a list of them, so that a burst (an auction's
end, a bidding war) costs the broker one message per batch instead of one per
delivery, and the deliveries share one guard, one write-back and their
provider calls' latency (:meth:`Deliverer.deliver_many`). The scheduler sends
a lone delivery as a single message, several of one queue as batches.

An actor maps each delivery's :class:`~workers.delivery.Outcome` to Dramatiq:

* sent, delivered, failed (permanent), dropped (redelivery): done;
* retry: the single actor raises ``dramatiq.Retry(delay=...)``; for a
  delivery of a batch, a single message of its own is enqueued with that
  delay. Either way the broker's delay queue waits, never a sleeping thread;
* exhausted: the single actor raises :class:`DeliveryExhausted`, refused by
  ``retry_when``, so the message lands in its queue's dead-letter queue. A
  delivery of a batch gets a single message of its own marked
  :data:`DEAD_LETTER_OPTION`, which the single actor dead-letters at once
  without touching the database: every dead letter carries exactly one
  delivery id, whichever actor sent it, and the operators' ``dlq`` commands
  see no difference.

A batch that fails as a whole (the database down during its guard, a bug) is
split into single messages, one per delivery, each then retried and
dead-lettered on its own; the redelivery guard drops those already handled.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import dramatiq
from dramatiq.message import generate_unique_id
from dramatiq.middleware import CurrentMessage

from models.enums import Channel
from workers.delivery import Deliverer, Result
from workers.queues import DEAD_LETTER_OPTION, actor_name, batch_actor_name, queue_for

log = logging.getLogger("clarion.actors")

#: Unexpected errors (a bug, the database down before the send) are retried
#: by Dramatiq this many times; the redelivery guard keeps that safe.
MAX_UNEXPECTED_RETRIES = 10
#: Wall-clock limit of one message, ms: fan-out to several push tokens or
#: webhook endpoints makes several provider calls, each with its own timeout
#: (a batch's calls run together). CLARION_LEASE_SECONDS (default 10 minutes)
#: must stay above it.
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
    """Declare the delivery actors on ``broker``, single and batch; returns the
    single ones by queue name (the batch ones: :func:`batch_actors`)."""
    if not any(isinstance(m, CurrentMessage) for m in broker.middleware):
        # The single actor reads its message's options (the dead-letter mark).
        broker.add_middleware(CurrentMessage())

    def deliver(delivery_id: str) -> None:
        message = CurrentMessage.get_current_message()
        if message is not None and message.options.get(DEAD_LETTER_OPTION):
            raise DeliveryExhausted(f"delivery {delivery_id}: attempts exhausted")
        outcome = get_deliverer().deliver(uuid.UUID(delivery_id))
        if outcome.result is Result.RETRY:
            raise dramatiq.Retry(delay=outcome.delay_ms)
        if outcome.result is Result.EXHAUSTED:
            raise DeliveryExhausted(f"delivery {delivery_id}: attempts exhausted")

    singles: dict[str, dramatiq.Actor[[str], None]] = {}
    for channel in Channel:
        for urgent in (False, True):
            queue = queue_for(channel, "urgent" if urgent else "normal")
            singles[queue] = dramatiq.actor(
                actor_name=actor_name(queue),
                queue_name=queue,
                broker=broker,
                priority=URGENT_PRIORITY if urgent else ROUTINE_PRIORITY,
                retry_when=retry_when,
                # Listed in throws: dead-lettered at once, logged without a traceback.
                throws=(DeliveryExhausted,),
                time_limit=TIME_LIMIT_MS,
            )(deliver)

    for queue, single in singles.items():
        dramatiq.actor(
            actor_name=batch_actor_name(queue),
            queue_name=queue,
            broker=broker,
            priority=single.priority,
            # Retried whole only when even splitting it failed (the broker
            # down too); the redelivery guard drops what was handled.
            retry_when=retry_when,
            time_limit=TIME_LIMIT_MS,
        )(_batch_function(single, get_deliverer))
    return singles


def _batch_function(
    single: dramatiq.Actor[[str], None], get_deliverer: Callable[[], Deliverer]
) -> Callable[[list[str]], None]:
    def deliver_batch(delivery_ids: list[str]) -> None:
        try:
            ids = [uuid.UUID(str(i)) for i in delivery_ids]
        except ValueError:
            log.error("a %s batch carries a malformed delivery id; dropped", single.queue_name)
            return
        try:
            outcomes = get_deliverer().deliver_many(ids, message_ids=generate_unique_id)
        except Exception as exc:
            log.warning(
                "a batch of %d %s deliveries failed (%s); sending them one by one",
                len(ids),
                single.queue_name,
                type(exc).__name__,
            )
            for delivery_id in ids:
                single.send(str(delivery_id))
            return
        for delivery_id, outcome in outcomes.items():
            if outcome.message_id is None:
                continue
            retry = outcome.result is Result.RETRY
            message: dramatiq.Message[None] = dramatiq.Message(
                queue_name=single.queue_name,
                actor_name=single.actor_name,
                args=(str(delivery_id),),
                kwargs={},
                options={} if retry else {DEAD_LETTER_OPTION: True},
                message_id=outcome.message_id,
            )
            try:
                single.broker.enqueue(message, delay=outcome.delay_ms if retry else None)
            except Exception as exc:
                # The outcome is committed (queued with its retry time, or
                # failed and dead-lettered in the row); the lease sweep
                # enqueues a waiting retry again. Retrying the batch instead
                # would send the retry before its backoff.
                log.warning(
                    "delivery %s: enqueueing its %s failed (%s); %s",
                    delivery_id,
                    "retry" if retry else "dead letter",
                    type(exc).__name__,
                    "the lease sweep will enqueue it again"
                    if retry
                    else "the row alone records it (`clarion dlq list`)",
                )

    return deliver_batch


def batch_actors(
    broker: dramatiq.Broker, singles: dict[str, dramatiq.Actor[[str], None]]
) -> dict[str, dramatiq.Actor[[list[str]], None]]:
    """The batch actors :func:`declare_actors` declared beside ``singles``, by queue."""
    return {queue: broker.get_actor(batch_actor_name(queue)) for queue in singles}
