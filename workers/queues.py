"""Queue names: one per channel, and a fast lane per channel for urgent traffic.

Redis has no broker-side priority, and an actor's ``priority`` only orders a
worker's local prefetch: a backlog in ``email`` would hold an urgent message
behind thousands. So ``urgent`` and ``high`` notifications go to
``<channel>_urgent``, a queue of their own consumed by the same workers with a
higher actor priority; ``normal`` and ``low`` go to ``<channel>``.
"""

from __future__ import annotations

from models.enums import Channel, Priority

FAST_LANE = frozenset({Priority.URGENT, Priority.HIGH})

#: Message option of a single delivery message that is to be dead-lettered as
#: it arrives (a delivery of a batch whose attempts ran out, see
#: :mod:`workers.actors`). Never carried over to a copy requeued from the
#: dead-letter queue.
DEAD_LETTER_OPTION = "clarion_dead_letter"


def queue_for(channel: Channel | str, priority: Priority | str) -> str:
    base = Channel(channel).value
    return f"{base}_urgent" if Priority(priority) in FAST_LANE else base


def all_queues() -> list[str]:
    return [q for c in Channel for q in (c.value, f"{c.value}_urgent")]


def actor_name(queue_name: str) -> str:
    """The delivery actor consuming ``queue_name`` (``deliver_email_urgent``)."""
    return f"deliver_{queue_name}"


def batch_actor_name(queue_name: str) -> str:
    """The actor consuming batches of deliveries on ``queue_name`` (``deliver_email_batch``)."""
    return f"deliver_{queue_name}_batch"


def channel_of(queue_name: str) -> Channel:
    return Channel(queue_name.removesuffix("_urgent"))
