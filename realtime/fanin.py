"""Redis fan-in: events and in-app notifications from Redis to the connections that want them.

One pubsub connection per gateway listens on the events channel
(``CLARION_EVENTS_CHANNEL``) and on every user's channel
(:data:`realtime.wire.USER_CHANNEL_PATTERN`). An event goes to the
subscribers of its auction and topics that :func:`realtime.visibility.can_see`
allows; a notification to all connections of its user.

The outbox relay may publish an event twice, and a resume may already have
replayed it: the ids of recent events are remembered (:data:`SEEN_EVENTS`)
and a second copy is dropped.

Redis pub/sub keeps nothing for a subscriber that is away. When the
subscription drops (Redis restarted, a failover, ``CLIENT KILL``, no answer
to a PING) the gateway subscribes again and then replays from PostgreSQL
(:meth:`realtime.store.Store.written_since`) every event written since the
loss that it did not receive, to the connections that want it and may see
it, in sequence order (:meth:`FanIn.catch_up`). :attr:`FanIn.receiving` is
False from the loss until that replay is done; ``GET /healthz`` reports it.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import logging
import time

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from models.enums import Visibility
from realtime import protocol, wire
from realtime.connection import text_frame
from realtime.fanout import FanoutLog
from realtime.index import SubscriptionIndex
from realtime.metrics import GatewayMetrics
from realtime.outbound import Outbound
from realtime.store import REPLAY_LIMIT, Store
from realtime.visibility import EventView, can_see, subscription_keys

log = logging.getLogger("clarion.realtime.gateway")

#: Event ids remembered to drop a second copy (the relay may publish twice).
SEEN_EVENTS = 50_000
#: Seconds of silence on the subscription before a PING; no answer to it for PONG_TIMEOUT is
#: a loss.
PING_INTERVAL = 2.0
PONG_TIMEOUT = 3.0
#: Seconds between attempts to subscribe again.
RECONNECT_DELAY = 0.5
#: Events written this long before the subscription's last sign of life are replayed too:
#: an event is written (``generated_at``) before its transaction commits and is published.
CATCH_UP_GRACE = 30.0


class FanIn:
    def __init__(
        self,
        index: SubscriptionIndex,
        store: Store,
        *,
        redis_url: str,
        events_channel: str,
        outbound: Outbound,
        fanout: FanoutLog | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.index = index
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.store = store
        self.outbound = outbound
        self.fanout = fanout
        self.redis_url = redis_url
        self.events_channel = events_channel
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: POSIX time of the last sign of life of the subscription (0.0: never up)
        self.alive_at = 0.0
        #: from when events may have been missed; None while nothing is missing
        self.lost_at: float | None = None
        #: why the gateway cannot receive now (None: it can)
        self.down_reason: str | None = "not subscribed yet"

    async def run(self) -> None:
        """Listen until cancelled, reconnecting when Redis goes away.

        After a loss, the new subscription is confirmed first, then what the
        gateway missed is read from PostgreSQL and dispatched (:meth:`catch_up`),
        and only then are the messages that arrived meanwhile read: they wait in
        the socket, so live copies of replayed events come after them and are
        dropped as seen.
        """
        while True:
            # No retries: redis-py would reconnect and resubscribe by itself,
            # silently, and the events published meanwhile would never be replayed.
            client = aioredis.Redis.from_url(
                self.redis_url,
                retry=Retry(NoBackoff(), 0),
                socket_connect_timeout=PONG_TIMEOUT,
            )
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(self.events_channel)
                await pubsub.psubscribe(wire.USER_CHANNEL_PATTERN)
                if self.lost_at is not None:
                    await self.catch_up(self.lost_at)
                self.lost_at = None
                self.down_reason = None
                self.alive_at = time.time()
                log.info(
                    "listening for events on %s and %s",
                    self.events_channel,
                    wire.USER_CHANNEL_PATTERN,
                )
                await self._listen(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(RECONNECT_DELAY)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()
                except Exception:  # noqa: S110 - closing a broken connection
                    pass

    async def _listen(self, pubsub: PubSub) -> None:
        """Read messages; a PING after :data:`PING_INTERVAL` of silence proves the
        subscription alive.

        A connection killed by Redis raises at once; a silent one (a partition,
        a server that stopped answering) is caught by a PING left unanswered for
        :data:`PONG_TIMEOUT`. Only an unanswered PING counts: what is already
        waiting in the socket is read first, so a gateway whose own loop was held
        up (a fan-out to thousands, a storm of handshakes, a starved process)
        does not take its own delay for Redis's silence.
        """
        pinged: float | None = None  # when the unanswered PING went out
        while True:
            message = await pubsub.get_message(timeout=PING_INTERVAL / 5)
            now = time.time()
            if message is not None:
                self.alive_at = now
                pinged = None  # anything from Redis answers for it
                kind = message.get("type")
                if kind == "message":
                    self.dispatch_event(message["data"])
                elif kind == "pmessage":
                    self.dispatch_notification(message["channel"], message["data"])
                continue
            if pinged is not None:
                if now - pinged > PONG_TIMEOUT:
                    raise ConnectionError(f"no answer from Redis for {now - pinged:.0f} s")
            elif now - self.alive_at >= PING_INTERVAL:
                await pubsub.ping()
                pinged = now

    def _lost(self, reason: str) -> None:
        if self.lost_at is None:
            # Events published from the last sign of life on may be missing.
            self.lost_at = self.alive_at or time.time()
            log.warning("Redis subscription lost (%s); reconnecting", reason)
        self.down_reason = reason

    @property
    def receiving(self) -> bool:
        """True while the subscription is up and nothing missed is waiting to be replayed."""
        return self.down_reason is None and self.alive_at > 0

    async def catch_up(self, lost_at: float) -> int:
        """Dispatch, in sequence order, the events written since ``lost_at`` (less a grace)
        that this gateway did not receive; return how many reached a connection.

        Events the gateway received live (or replayed to a resuming client) are
        in :attr:`seen` and skipped, so nobody gets one twice. If the history
        cannot be read in full, every connected client is sent a ``resume``
        frame instead: it subscribes again with its ``last_seq``.
        """
        if not self.index.connections:
            return 0
        since = lost_at - CATCH_UP_GRACE
        try:
            rows = await asyncio.to_thread(self.store.written_since, since, REPLAY_LIMIT)
        except Exception as exc:
            log.warning("cannot read missed events (%s); asking clients to resume", exc)
            return self._ask_to_resume("history_unavailable")
        if len(rows) >= REPLAY_LIMIT:
            log.warning("more than %d events missed; asking clients to resume", REPLAY_LIMIT)
            return self._ask_to_resume("too_many_missed")
        count = 0
        for view, _unpublished in rows:
            count += self.dispatch_view(view)
        log.info("replayed %d missed event deliveries after the Redis subscription returned", count)
        return count

    def _ask_to_resume(self, reason: str) -> int:
        frame = protocol.dumps({"type": "resume", "reason": reason})
        conns = list(self.index.connections)
        for conn in conns:
            conn.offer(frame)
        return 0

    def dispatch_event(self, raw: bytes | str) -> int:
        """Route one published event to every connection that may see it; return how many."""
        try:
            event = EventView.from_payload(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed event message")
            self.metrics.event("malformed")
            return 0
        return self.dispatch_view(event)

    def dispatch_view(self, event: EventView) -> int:
        """Deliver an event not seen before to the connections that want it and may see it.

        The frame is encoded once; each connection that keeps up gets it written
        to its socket here, in this loop, with no task switch (see
        :mod:`realtime.connection`), and the sends are counted once per event.
        """
        if self.remember(event.event_id):
            self.metrics.event("duplicate")
            return 0
        now = time.time()
        sched = self.fanout.sched() if self.fanout is not None else None
        if event.expires_at is not None and event.expires_at <= now:
            self.metrics.event("expired")
            return 0
        self.metrics.event("dispatched")
        self.metrics.arrived(_posix(event.payload.get("generated_at")), now)
        event.arrived = time.monotonic()
        targets = self.index.subscribers(list(subscription_keys(event)))
        data = event.frame.encode()
        nbytes = len(data)
        wire = text_frame(data)
        count = direct = 0
        # Expiry is checked above: a public event is everyone's, no per-viewer check.
        public = event.visibility is Visibility.PUBLIC
        for conn in list(targets):
            if public or can_see(event, conn.viewer, now):
                count += 1
                if conn.deliver(event, data, nbytes, wire):
                    direct += 1
        if direct:
            self.outbound.events_sent(event, direct)
            self.metrics.frames_written(event.arrived, direct)
        if self.fanout is not None and count:
            self.fanout.dispatched(event, now, direct, count - direct, sched)
        return count

    def dispatch_notification(self, channel: bytes | str, raw: bytes | str) -> None:
        """Forward one in-app notification, as it is, to every connection of its user."""
        conns = self.index.of_user(wire.user_of_channel(channel))
        if not conns:
            return
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            notification_id = wire.notification_id_of(text)
        except ValueError:
            return
        nbytes = len(text.encode())
        for conn in list(conns):
            conn.offer(text, nbytes=nbytes, notification_id=notification_id)

    def remember(self, event_id: str) -> bool:
        """Record an event id; True if it was already seen."""
        if event_id in self.seen:
            return True
        self.seen[event_id] = None
        if len(self.seen) > SEEN_EVENTS:
            self.seen.popitem(last=False)
        return False


def _posix(value: object) -> float | None:
    """An ISO 8601 time from a payload as POSIX seconds (None if absent or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()
