"""Presence: is user U connected to a gateway now, and subscribed to auction A?

Answered from the gateways' live state, which every gateway process mirrors
into Redis as it changes (:mod:`realtime.presence` writes it), not from the
``websocket_connections`` rows flushed every few seconds. A delivery rule
calls it, for example to skip an "outbid" push to a user who is watching the
auction's page right now::

    presence = Presence(redis.Redis.from_url(settings.redis_url), settings.events_channel)
    if presence.is_present(user_id, auction_id=auction_id):
        ...  # the live page shows it; no push needed

:meth:`Presence.watching` asks the same of many (user, auction) pairs in one
call; :class:`LivePresence` wraps it for the delivery policy's claim, which
falls back to the connection rows when Redis gives no answer.

One Redis round trip (a Lua script), exact to within the gateway's write
delay (tens of milliseconds) for subscribe, unsubscribe and disconnect, and
to within ``CLARION_PRESENCE_TTL`` (10 s) for a gateway process that died
without a word (``kill -9``, a lost machine).

The keys, under ``<CLARION_EVENTS_CHANNEL>:presence`` (so that deployments
sharing a Redis, like their event streams, stay apart):

* ``…:gw:<instance>``: a gateway process is alive; a string set with a TTL of
  ``CLARION_PRESENCE_TTL`` and refreshed three times per TTL. ``instance`` is
  a fresh id per process start.
* ``…:user:<user_id>``: a hash, one field per gateway process holding a
  connection of the user; the value is the space-separated auction ids that
  any of the user's connections on that process subscribes to (empty: only
  connected). A field whose process is gone is ignored, and removed, by the
  reader; the hash expires an hour after its last write (gateways refresh
  the keys of their users every ten minutes).

Anonymous connections are not recorded. The script reads keys it is not
given as ``KEYS`` (the process keys): fine on a single Redis or a replica set,
not on Redis Cluster.

It lives with the workers (below the real-time package) so that delivery
rules in the workers and the scheduler may import it.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Collection

import redis

log = logging.getLogger("clarion.presence")

#: Seconds a user's hash lives after its last write; gateways refresh it well before.
USER_KEY_TTL = 3600.0
#: Seconds between a gateway's refreshes of its users' hashes' expiry.
USER_KEY_REFRESH = 600.0

_IS_PRESENT = """
local fields = redis.call('HGETALL', KEYS[1])
local found = 0
for i = 1, #fields, 2 do
  local instance = fields[i]
  if redis.call('EXISTS', ARGV[1] .. instance) == 1 then
    if ARGV[2] == '' then
      found = 1
    elseif string.find(' ' .. fields[i + 1] .. ' ', ' ' .. ARGV[2] .. ' ', 1, true) then
      found = 1
    end
  else
    redis.call('HDEL', KEYS[1], instance)
  end
end
return found
"""


# The same walk for many (user, auction) pairs in one call: KEYS[i] is the user's
# hash and ARGV[i + 1] the auction of pair i; a process's liveness is read once.
_ARE_PRESENT = """
local alive = {}
local out = {}
for i = 1, #KEYS do
  local fields = redis.call('HGETALL', KEYS[i])
  local found = 0
  local wanted = ' ' .. ARGV[i + 1] .. ' '
  for j = 1, #fields, 2 do
    local instance = fields[j]
    local live = alive[instance]
    if live == nil then
      live = redis.call('EXISTS', ARGV[1] .. instance) == 1
      alive[instance] = live
    end
    if live then
      if ARGV[i + 1] == '' or string.find(' ' .. fields[j + 1] .. ' ', wanted, 1, true) then
        found = 1
      end
    else
      redis.call('HDEL', KEYS[i], instance)
    end
  end
  out[i] = found
end
return out
"""


def prefix(events_channel: str) -> str:
    """The key prefix of one deployment's presence entries."""
    return f"{events_channel}:presence"


def user_key(events_channel: str, user_id: str) -> str:
    return f"{prefix(events_channel)}:user:{user_id}"


def gateway_key(events_channel: str, instance: str) -> str:
    return f"{prefix(events_channel)}:gw:{instance}"


def encode_auctions(auctions: set[str]) -> str:
    """The value of a user's field: the auction ids, space-separated."""
    return " ".join(sorted(auctions))


class Presence:
    """Reads presence (the delivery rules' side). ``client``: a synchronous Redis client
    for ``CLARION_REDIS_URL``; ``events_channel``: ``CLARION_EVENTS_CHANNEL``."""

    def __init__(self, client: redis.Redis, events_channel: str) -> None:
        self.client = client
        self.events_channel = events_channel
        self._script = client.register_script(_IS_PRESENT)
        self._batch = client.register_script(_ARE_PRESENT)

    def is_present(
        self, user_id: uuid.UUID | str, auction_id: uuid.UUID | str | None = None
    ) -> bool:
        """True if ``user_id`` has a connection open on a live gateway process now and, when
        ``auction_id`` is given, one of that user's connections there subscribes to it.

        Raises :class:`ValueError` naming the argument if an id is not a UUID, and
        ``redis.RedisError`` if Redis does not answer (the caller decides what absence
        of an answer means for its rule).
        """
        user = _uuid(user_id, "user_id")
        auction = "" if auction_id is None else _uuid(auction_id, "auction_id")
        found = self._script(
            keys=[user_key(self.events_channel, user)],
            args=[gateway_key(self.events_channel, ""), auction],
        )
        return bool(found)

    def watching(
        self, pairs: Collection[tuple[uuid.UUID, uuid.UUID]]
    ) -> set[tuple[uuid.UUID, uuid.UUID]]:
        """The (user, auction) pairs of ``pairs`` whose user has a connection on a live
        gateway process subscribed to that auction now: :meth:`is_present` for a whole
        batch in one round trip. Raises ``redis.RedisError`` if Redis does not answer."""
        ordered = list(pairs)
        if not ordered:
            return set()
        found = self._batch(
            keys=[user_key(self.events_channel, str(u)) for u, _ in ordered],
            args=[gateway_key(self.events_channel, ""), *(str(a) for _, a in ordered)],
        )
        return {pair for pair, hit in zip(ordered, found, strict=True) if hit}


class LivePresence:
    """Presence for the delivery policy: the live answer, or None when Redis does not give one.

    The policy then falls back to the ``websocket_connections`` rows. After a
    failure Redis is left alone for ``retry_after`` seconds, so that a Redis
    outage costs one timeout, not one per claim; the outage is logged once
    when it starts and once when it ends.
    """

    def __init__(self, presence: Presence, *, retry_after: float = 5.0) -> None:
        self.presence = presence
        self.retry_after = retry_after
        self._down_until = 0.0
        self._failing = False

    @classmethod
    def from_url(cls, url: str, events_channel: str, *, timeout: float = 0.5) -> LivePresence:
        # A short timeout: the claim waits for this answer while it holds its locks.
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(Presence(client, events_channel))

    def watching(
        self, pairs: Collection[tuple[uuid.UUID, uuid.UUID]]
    ) -> set[tuple[uuid.UUID, uuid.UUID]] | None:
        if time.monotonic() < self._down_until:
            return None
        try:
            found = self.presence.watching(pairs)
        except redis.RedisError as exc:
            if not self._failing:
                log.warning(
                    "presence unavailable in Redis (%s): using the connection rows",
                    type(exc).__name__,
                )
                self._failing = True
            self._down_until = time.monotonic() + self.retry_after
            return None
        if self._failing:
            log.info("presence available in Redis again")
            self._failing = False
        return found

    def close(self) -> None:
        self.presence.client.close()


def _uuid(value: uuid.UUID | str, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, got {str(value)[:64]!r}") from None
