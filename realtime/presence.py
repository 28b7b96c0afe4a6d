"""The gateway's side of presence: mirror who is connected and subscribed where into Redis.

:class:`PresenceWriter` is told by the subscription index which users
changed (a connection opened or closed, a subscribe, an unsubscribe), and
writes their entries in one pipeline per loop round, a few milliseconds
later; a heartbeat key says this process is alive. The key scheme and the
reader are :mod:`workers.presence`. A Redis error is logged once per outage
and the changed users are written again when Redis answers.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import redis.asyncio as aioredis

from realtime.index import SubscriptionIndex
from workers.presence import (
    USER_KEY_REFRESH,
    USER_KEY_TTL,
    encode_auctions,
    gateway_key,
    user_key,
)

log = logging.getLogger("clarion.realtime.gateway")

#: Seconds between retries while Redis does not answer.
RETRY_DELAY = 0.5


class PresenceWriter:
    def __init__(
        self, index: SubscriptionIndex, *, redis_url: str, events_channel: str, ttl: float
    ) -> None:
        self.index = index
        self.events_channel = events_channel
        self.ttl = ttl
        self.instance = uuid.uuid4().hex
        self.client = aioredis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()
        self.failing = False

    def changed(self, user_id: str) -> None:
        """``user_id``'s connections or subscriptions on this process changed."""
        self.dirty.add(user_id)
        self.wake.set()

    async def run(self) -> None:
        """Write changes and the heartbeat until cancelled."""
        gw = gateway_key(self.events_channel, self.instance)
        beat_every = self.ttl / 3
        next_beat = 0.0
        next_refresh = time.monotonic() + USER_KEY_REFRESH
        while True:
            try:
                now = time.monotonic()
                if now >= next_beat:
                    await self.client.set(gw, b"1", px=int(self.ttl * 1000))
                    next_beat = now + beat_every
                if now >= next_refresh:
                    self.dirty.update(self.index.by_user)
                    next_refresh = now + USER_KEY_REFRESH
                if self.dirty:
                    await self._write()
                if self.failing:
                    log.info("presence written to Redis again")
                    self.failing = False
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self.failing:
                    log.warning("cannot write presence to Redis (%s); retrying", type(exc).__name__)
                    self.failing = True
                next_beat = 0.0
                await asyncio.sleep(RETRY_DELAY)
                continue
            self.wake.clear()
            timeout = max(0.0, next_beat - time.monotonic())
            try:
                async with asyncio.timeout(timeout):
                    await self.wake.wait()
            except TimeoutError:
                pass

    async def _write(self) -> None:
        users, self.dirty = self.dirty, set()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for user in users:
                    key = user_key(self.events_channel, user)
                    conns = self.index.by_user.get(user)
                    if conns:
                        auctions: set[str] = set()
                        for conn in conns:
                            auctions.update(conn.auctions)
                        pipe.hset(key, self.instance, encode_auctions(auctions))
                        pipe.pexpire(key, int(USER_KEY_TTL * 1000))
                    else:
                        pipe.hdel(key, self.instance)
                await pipe.execute()
        except BaseException:
            self.dirty |= users
            raise

    async def close(self) -> None:
        """Remove this process's entries (a graceful shutdown): its users read as absent."""
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(gateway_key(self.events_channel, self.instance))
                for user in list(self.index.by_user):
                    pipe.hdel(user_key(self.events_channel, user), self.instance)
                await pipe.execute()
        except Exception as exc:
            log.warning("cannot remove presence entries (%s); they expire", type(exc).__name__)
        await self.client.aclose()
