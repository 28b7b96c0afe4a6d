"""Outbound bookkeeping: what went out since the last flush, to be written in one batch.

Per event, sends, redeliveries and acknowledgements (:class:`EventStats`,
merged into the event row by :meth:`realtime.store.Store.record_event_stats`);
per in-app notification, that it reached a connected client (the delivery is
marked received). The periodic flush takes both with :meth:`Outbound.take`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid

from clarion.core.clock import utcnow
from realtime.connection import Connection
from realtime.store import EventStats
from realtime.visibility import EventView

#: (notification id, user id, when it reached the client)
Received = tuple[uuid.UUID, uuid.UUID, dt.datetime]


class Outbound:
    def __init__(self) -> None:
        self.event_stats: dict[str, EventStats] = {}
        self.received: list[Received] = []

    def stats(self, event_id: str) -> EventStats:
        stats = self.event_stats.get(event_id)
        if stats is None:
            stats = self.event_stats[event_id] = EventStats()
        return stats

    def event_sent(self, conn: Connection, event: EventView, attempt: int) -> None:
        stats = self.stats(event.event_id)
        if attempt == 1:
            stats.sent += 1
        else:
            stats.redelivered += 1
        if event.ack_required:
            conn.await_ack(event, attempt)

    def events_sent(self, event: EventView, count: int) -> None:
        """``count`` first sends of ``event`` went out in one fan-out (their acks, if the
        event needs any, are already awaited by each connection)."""
        self.stats(event.event_id).sent += count

    def notification_sent(self, conn: Connection, notification_id: str) -> None:
        with contextlib.suppress(ValueError):
            self.received.append(
                (uuid.UUID(notification_id), uuid.UUID(conn.viewer.user_id), utcnow())
            )

    def acked(self, conn: Connection, event_id: str, attempt: int) -> None:
        """``conn`` acknowledged ``event_id``, sent ``attempt`` times."""
        stats = self.stats(event_id)
        stats.acked += 1
        stats.acks[f"{conn.viewer.user_id}/{conn.connection_id}"] = {
            "user_id": conn.viewer.user_id,
            "connection_id": str(conn.connection_id),
            "acked_at": utcnow().isoformat(),
            "attempts": attempt,
        }

    def unacked(self, event_id: str) -> None:
        """An event that will not be acknowledged (redeliveries exhausted, client gone)."""
        self.stats(event_id).unacked += 1

    def take(self) -> tuple[dict[str, EventStats], list[Received]]:
        """What was recorded since the last call."""
        stats, self.event_stats = self.event_stats, {}
        received, self.received = self.received, []
        return stats, received
