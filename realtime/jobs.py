"""The gateway's periodic jobs: flush, watchdog, outbox relay, sweep of lost rows.

* :meth:`Jobs.flush` (every ``CLARION_GATEWAY_FLUSH_INTERVAL``): changed
  counters, ``last_heartbeat`` (the last pong) and subscriptions of every
  connection in one batched UPDATE, then event stats and in-app receipts;
* :meth:`Jobs.watch` (every :data:`WATCH_INTERVAL`): cut off connections
  whose token expired or whose socket stalled a send for
  ``CLARION_GATEWAY_SEND_TIMEOUT``; redeliver an unacked event after its
  ``ack_timeout``, at most ``CLARION_EVENT_MAX_REDELIVERIES`` times;
* :meth:`Jobs.relay`: publish events their publisher committed but did not
  publish (:func:`realtime.outbox.relay_unpublished`);
* :meth:`Jobs.sweep` (also run at start-up): close the rows left open by a
  dead gateway (no heartbeat for 3 intervals).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from sqlalchemy.engine import Engine

from clarion.core.settings import Settings
from models.inbox import Inbox
from realtime import protocol
from realtime.connection import SLOW_CONSUMER, Connection
from realtime.index import SubscriptionIndex
from realtime.outbound import Outbound
from realtime.outbox import Outlet, relay_unpublished
from realtime.store import Store
from realtime.visibility import can_see, client_frame
from realtime.writer import Writer

log = logging.getLogger("clarion.realtime.gateway")

#: Seconds between rounds of the connection watchdog (acks, token expiry, stalled sends).
WATCH_INTERVAL = 0.2


class Jobs:
    def __init__(
        self,
        settings: Settings,
        *,
        engine: Engine,
        outlet: Outlet,
        store: Store,
        inbox: Inbox,
        writer: Writer,
        index: SubscriptionIndex,
        outbound: Outbound,
        cut_off: Callable[[Connection, int, str], None],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.outlet = outlet
        self.store = store
        self.inbox = inbox
        self.writer = writer
        self.index = index
        self.outbound = outbound
        self.cut_off = cut_off

    async def flush(self) -> None:
        """Write changed counters and subscriptions, event stats and in-app receipts."""
        for conn in list(self.index.connections):
            values = conn.counters()
            beat = conn.socket.heartbeat()
            state = (*values.values(), beat)
            if state != conn.flushed:
                conn.flushed = state
                if beat is not None:
                    values["last_heartbeat"] = beat
                if conn.subs_dirty:
                    values.update(conn.subscription_values())
                    conn.subs_dirty = False
                self.writer.update(conn.connection_id, **values)
            elif conn.subs_dirty:
                conn.subs_dirty = False
                self.writer.update(conn.connection_id, **conn.subscription_values())
        stats, received = self.outbound.take()
        await self.writer.flush()
        if stats:
            await asyncio.to_thread(self.store.record_event_stats, stats)
        if received:
            await asyncio.to_thread(self.inbox.mark_in_app_received, received)

    async def watch(self) -> None:
        """Cut off expired tokens and stalled clients; redeliver unacked events."""
        now = time.monotonic()
        wall = time.time()
        limit = self.settings.event_max_redeliveries
        send_timeout = self.settings.gateway_send_timeout
        for conn in list(self.index.connections):
            if conn.token_expires_at is not None and conn.token_expires_at <= wall:
                self.cut_off(conn, 4401, "token expired")
                continue
            if conn.stalled(now, send_timeout):
                self.cut_off(conn, 1008, SLOW_CONSUMER)
                continue
            for entry in conn.due_acks(now):
                event, attempt = entry[0], entry[1]
                if attempt > limit:  # first send plus `limit` redeliveries, all unacked
                    assert conn.pending_acks is not None
                    conn.pending_acks.pop(event.event_id, None)
                    self.outbound.unacked(event.event_id)
                    continue
                if not can_see(event, conn.viewer, wall):
                    continue  # expired meanwhile: never delivered again
                frame = protocol.dumps(client_frame(event.payload, attempt=attempt + 1))
                conn.offer(frame, event=event, attempt=attempt + 1)

    async def relay(self) -> None:
        s = self.settings
        count = await asyncio.to_thread(
            relay_unpublished,
            self.engine,
            self.outlet,
            older_than=s.event_relay_after,
            window=s.event_history_seconds,
        )
        if count:
            log.warning("relay published %d event(s) their publisher did not", count)

    async def sweep(self) -> int:
        """Close the rows of connections lost with their gateway; return how many."""
        return await asyncio.to_thread(self.store.sweep_stale, older_than=self.stale_after())

    def stale_after(self) -> float:
        s = self.settings
        return 3 * s.gateway_heartbeat + s.gateway_heartbeat_timeout + s.gateway_flush_interval


async def every(interval: float, job: Callable[[], Awaitable[object]]) -> None:
    """Run ``job`` every ``interval`` seconds until cancelled; a failed round is logged."""
    while True:
        await asyncio.sleep(interval)
        try:
            await job()
        except Exception:
            log.exception("background job %s failed", getattr(job, "__name__", job))
