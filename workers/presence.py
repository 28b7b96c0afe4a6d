"""Presence: is user U connected to a gateway now, and subscribed to auction A?

Answered from the gateways' live state, which every gateway process mirrors
into Redis as it changes (:mod:`realtime.presence` writes it), not from the
``websocket_connections`` rows flushed every few seconds. A delivery rule
calls it, for example to skip an "outbid" push to a user who is watching the
auction's page right now::

    presence = Presence(redis.Redis.from_url(settings.redis_url), settings.events_channel)
    if presence.is_present(user_id, auction_id=auction_id):
        ...  # the live page shows it; no push needed

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

import uuid

import redis

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


def _uuid(value: uuid.UUID | str, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        raise ValueError(f"{name} must be a UUID, got {str(value)[:64]!r}") from None
