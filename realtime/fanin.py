"""Redis fan-in: events and in-app notifications from Redis to the connections that want them.

One pubsub connection per gateway listens on the events channel
(``CLARION_EVENTS_CHANNEL``) and on every user's channel
(:data:`realtime.wire.USER_CHANNEL_PATTERN`). An event goes to the
subscribers of its auction and topics that :func:`realtime.visibility.can_see`
allows; a notification to all connections of its user.

The outbox relay may publish an event twice, and a resume may already have
replayed it: the ids of recent events are remembered (:data:`SEEN_EVENTS`)
and a second copy is dropped.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time

import redis.asyncio as aioredis

from realtime import wire
from realtime.index import SubscriptionIndex
from realtime.visibility import EventView, can_see, subscription_keys

log = logging.getLogger("clarion.realtime.gateway")

#: Event ids remembered to drop a second copy (the relay may publish twice).
SEEN_EVENTS = 50_000


class FanIn:
    def __init__(self, index: SubscriptionIndex, *, redis_url: str, events_channel: str) -> None:
        self.index = index
        self.redis_url = redis_url
        self.events_channel = events_channel
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()

    async def run(self) -> None:
        """Listen until cancelled, reconnecting when Redis goes away."""
        channel = self.events_channel
        pattern = wire.USER_CHANNEL_PATTERN
        while True:
            client = aioredis.Redis.from_url(self.redis_url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                await pubsub.psubscribe(pattern)
                log.info("listening for events on %s and %s", channel, pattern)
                async for message in pubsub.listen():
                    kind = message.get("type")
                    if kind == "message":
                        self.dispatch_event(message["data"])
                    elif kind == "pmessage":
                        self.dispatch_notification(message["channel"], message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Events published while Redis is unreachable are not seen live;
                # clients recover them by resuming with their last sequence.
                log.warning("Redis subscription lost (%s); reconnecting", exc)
                await asyncio.sleep(1.0)
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                    await client.aclose()
                except Exception:  # noqa: S110 - closing a broken connection
                    pass

    def dispatch_event(self, raw: bytes | str) -> int:
        """Route one published event to every connection that may see it; return how many."""
        try:
            event = EventView.from_payload(json.loads(raw))
        except (ValueError, KeyError, TypeError):
            log.warning("dropping a malformed event message")
            return 0
        if self.remember(event.event_id):
            return 0
        now = time.time()
        if event.expires_at is not None and event.expires_at <= now:
            return 0
        targets = self.index.subscribers(list(subscription_keys(event)))
        nbytes = len(event.frame.encode())
        count = 0
        for conn in list(targets):
            if can_see(event, conn.viewer, now):
                conn.deliver(event, nbytes)
                count += 1
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
