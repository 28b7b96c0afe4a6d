"""The subscription index: which open connections want which events.

Kept in memory by each gateway: by subscription key (``auction:<id>`` or a
topic) for events, by user id for in-app notifications. Only connections
that are open are indexed; a closed one is removed with all its keys.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Collection, Iterable

from realtime.connection import Connection
from realtime.visibility import auction_key


class SubscriptionIndex:
    def __init__(self) -> None:
        self.connections: set[Connection] = set()
        self.by_key: dict[str, set[Connection]] = collections.defaultdict(set)
        self.by_user: dict[str, set[Connection]] = collections.defaultdict(set)
        #: told the user id of an authenticated connection opened, closed or (un)subscribed
        #: (presence, :mod:`realtime.presence`)
        self.on_user_change: Callable[[str], None] | None = None
        #: connections opened since the gateway started (a metric)
        self.opened = 0

    def _changed(self, conn: Connection) -> None:
        if self.on_user_change is not None and conn.viewer.authenticated:
            self.on_user_change(conn.viewer.user_id)

    def open(self, conn: Connection) -> None:
        """Index a connection that is now open (authenticated ones by user too)."""
        self.connections.add(conn)
        self.opened += 1
        if conn.viewer.authenticated:
            self.by_user[conn.viewer.user_id].add(conn)
        self._changed(conn)

    def close(self, conn: Connection) -> None:
        """Forget a connection and every key it was subscribed under."""
        self.connections.discard(conn)
        for key in (*conn.topics, *(auction_key(a) for a in conn.auctions)):
            self.unsubscribe(key, conn)
        users = self.by_user.get(conn.viewer.user_id)
        if users is not None:
            users.discard(conn)
            if not users:
                del self.by_user[conn.viewer.user_id]
        self._changed(conn)

    def subscribe(self, keys: Iterable[str], conn: Connection) -> None:
        for key in keys:
            self.by_key[key].add(conn)
        self._changed(conn)

    def unsubscribe(self, key: str, conn: Connection) -> None:
        self._changed(conn)
        members = self.by_key.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.by_key[key]

    def subscribers(self, keys: list[str]) -> Collection[Connection]:
        """The connections subscribed under any of ``keys`` (each once)."""
        if len(keys) == 1:
            return self.by_key.get(keys[0], ())
        return set().union(*(self.by_key.get(k, ()) for k in keys))

    def of_user(self, user_id: str) -> set[Connection] | None:
        return self.by_user.get(user_id)
