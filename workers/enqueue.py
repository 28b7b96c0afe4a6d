"""Enqueue a batch of messages in one round trip.

Dramatiq's ``broker.enqueue`` costs one round trip per message on Redis (one
``EVALSHA`` of its dispatch script): a scheduler handing 1,000 deliveries to
the broker waited for 1,000 answers. :func:`enqueue_many` sends a batch as
one ``MULTI`` ... ``EXEC`` of the same script calls, so a batch costs one
round trip and is taken whole or not at all (a connection lost before
``EXEC`` leaves nothing behind; one lost after it leaves every message in the
queue and the caller enqueues them again, which the redelivery guard
absorbs, as with a single message).

Each message is stored exactly as ``RedisBroker.enqueue`` stores it (a fresh
``redis_message_id`` per copy, the broker's middleware hooks around it), so
the consumers see no difference.

On RabbitMQ, ``broker.enqueue`` already waits for nothing (Dramatiq opens
its channels without publisher confirms: a publish is a socket write and its
queue declaration a set lookup after the first), so the batch goes through
it message after message; so does any other broker (the in-process stub of
the embedded demo).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import Any

import dramatiq
from dramatiq.common import current_millis

#: Messages per round trip: a MULTI of this many script calls stays well
#: under Redis's limits while the cost per message is already flat.
BATCH_SIZE = 1000

Message = dramatiq.Message[Any]


def enqueue_many(
    broker: dramatiq.Broker,
    messages: Sequence[Message],
    on_enqueued: Callable[[Message], None],
    *,
    batch_size: int = BATCH_SIZE,
) -> None:
    """Enqueue ``messages`` in order, calling ``on_enqueued`` for each one taken.

    The broker's error propagates; the messages not reported through
    ``on_enqueued`` were not taken (on Redis, a failed batch is taken whole
    or not at all, and reported only when taken).
    """
    from dramatiq.brokers.redis import RedisBroker

    if isinstance(broker, RedisBroker):
        for start in range(0, len(messages), batch_size):
            chunk = messages[start : start + batch_size]
            _redis_batch(broker, chunk)
            for message in chunk:
                on_enqueued(message)
        return
    for message in messages:
        broker.enqueue(message)
        on_enqueued(message)


def _redis_batch(broker: Any, messages: Sequence[Message]) -> None:
    """One MULTI/EXEC of the dispatch script's ``enqueue``, as RedisBroker.enqueue does it."""
    dispatch = broker.scripts["dispatch"]
    keys = [broker.namespace]
    max_unpack = broker._max_unpack_size()
    copies = []
    with broker.client.pipeline(transaction=True) as pipe:
        for message in messages:
            copy = message.copy(options={"redis_message_id": str(uuid.uuid4())})
            broker.emit_before("enqueue", copy, None)
            args = [
                "enqueue",
                current_millis(),
                copy.queue_name,
                broker.broker_id,
                broker.heartbeat_timeout,
                broker.dead_message_ttl,
                broker._should_do_maintenance("enqueue"),
                max_unpack,
                copy.options["redis_message_id"],
                copy.encode(),
            ]
            dispatch(keys=keys, args=args, client=pipe)
            copies.append(copy)
        pipe.execute()
    for copy in copies:
        broker.emit_after("enqueue", copy, None)
