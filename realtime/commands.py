"""Client commands: what the gateway does with each frame a client sends.

``subscribe`` (with an optional resume from history), ``unsubscribe``,
``ack``, ``read`` / ``click`` reports, ``refresh`` of the token and
``ping``. A frame that cannot be used is answered with an ``error`` frame
carrying the :class:`realtime.protocol.ProtocolError` code; a client that
sends more than :data:`MAX_ERRORS` of them is cut off.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from models.inbox import Inbox
from realtime import protocol
from realtime.auth import TokenError, verify_token
from realtime.connection import Connection
from realtime.index import SubscriptionIndex
from realtime.outbound import Outbound
from realtime.store import Store
from realtime.visibility import auction_key

log = logging.getLogger("clarion.realtime.gateway")

#: Protocol errors tolerated before a connection is closed.
MAX_ERRORS = 50


class Commands:
    def __init__(
        self,
        *,
        jwt_secret: str | None,
        history_seconds: float,
        index: SubscriptionIndex,
        store: Store,
        inbox: Inbox,
        outbound: Outbound,
        remember: Callable[[str], bool],
        cut_off: Callable[[Connection, int, str], None],
    ) -> None:
        self.jwt_secret = jwt_secret
        self.history_seconds = history_seconds
        self.index = index
        self.store = store
        self.inbox = inbox
        self.outbound = outbound
        #: records an event id as seen (so that its live copy is dropped)
        self.remember = remember
        self.cut_off = cut_off

    async def on_message(self, conn: Connection, message: str | bytes) -> None:
        try:
            command = protocol.parse(message)
            if isinstance(command, protocol.Subscribe):
                await self.subscribe(conn, command)
            elif isinstance(command, protocol.Unsubscribe):
                self.unsubscribe(conn, command)
            elif isinstance(command, protocol.Ack):
                self.ack(conn, command.event_id)
            elif isinstance(command, protocol.Report):
                await self.report(conn, command)
            elif isinstance(command, protocol.Refresh):
                self.refresh(conn, command.token)
            else:
                conn.offer(protocol.dumps({"type": "pong"}))
        except protocol.ProtocolError as exc:
            conn.error_count += 1
            conn.last_error = str(exc)[:1000]
            conn.offer(protocol.dumps({"type": "error", "error": exc.code, "detail": exc.detail}))
            if conn.error_count > MAX_ERRORS:
                self.cut_off(conn, 1008, "too many protocol errors")
        except Exception as exc:
            # A database hiccup must not take the connection down: report and go on.
            log.exception("handling a frame of connection %s failed", conn.connection_id)
            conn.error_count += 1
            conn.last_error = f"internal: {type(exc).__name__}"
            conn.offer(protocol.dumps({"type": "error", "error": "internal"}))

    async def subscribe(self, conn: Connection, command: protocol.Subscribe) -> None:
        total = len(conn.topics | set(command.topics)) + len(conn.auctions | set(command.auctions))
        if total > protocol.MAX_SUBSCRIPTIONS:
            raise protocol.ProtocolError(
                "too_many_subscriptions", f"at most {protocol.MAX_SUBSCRIPTIONS}"
            )
        keys = [*command.topics, *(auction_key(a) for a in command.auctions)]
        resume = {k: v for k, v in command.last_seq.items() if k in keys}
        if resume:
            conn.replay_buffer = []
        conn.topics.update(command.topics)
        conn.auctions.update(command.auctions)
        self.index.subscribe(keys, conn)
        conn.subs_dirty = True
        replayed = 0
        if resume:
            try:
                events, gaps = await asyncio.to_thread(
                    self.store.history,
                    resume,
                    conn.viewer,
                    window=self.history_seconds,
                )
            except Exception:
                log.exception("history for connection %s failed", conn.connection_id)
                events, gaps = [], []
                conn.offer(protocol.dumps({"type": "error", "error": "history_unavailable"}))
                gaps_keys = list(resume)
                for key in gaps_keys:
                    conn.offer(
                        protocol.dumps(
                            {
                                "type": "gap",
                                "subscription": key,
                                "last_seq": resume[key],
                                "recovered": False,
                            }
                        )
                    )
            for gap in gaps:
                conn.offer(protocol.dumps(gap.frame()))
            sent: set[str] = set()
            for event, unpublished in events:
                self.remember(event.event_id)
                sent.add(event.event_id)
                if unpublished:
                    if conn.replayed_unpublished is None:
                        conn.replayed_unpublished = set()
                    conn.replayed_unpublished.add(event.event_id)
                conn.offer(event.frame, event=event)
            replayed = len(events)
            buffered, conn.replay_buffer = conn.replay_buffer or [], None
            for event in buffered:
                if event.event_id not in sent:
                    sent.add(event.event_id)
                    conn.offer(event.frame, event=event)
        conn.offer(
            protocol.dumps(
                {
                    "type": "subscribed",
                    "topics": sorted(conn.topics),
                    "auctions": sorted(conn.auctions),
                    "replayed": replayed,
                }
            )
        )

    def unsubscribe(self, conn: Connection, command: protocol.Unsubscribe) -> None:
        for topic in command.topics:
            conn.topics.discard(topic)
            self.index.unsubscribe(topic, conn)
        for auction in command.auctions:
            conn.auctions.discard(auction)
            self.index.unsubscribe(auction_key(auction), conn)
        conn.subs_dirty = True
        conn.offer(
            protocol.dumps(
                {
                    "type": "unsubscribed",
                    "topics": sorted(conn.topics),
                    "auctions": sorted(conn.auctions),
                }
            )
        )

    def ack(self, conn: Connection, event_id: str) -> None:
        attempt = conn.take_ack(event_id)
        if attempt is None:
            return  # a late or repeated ack: nothing is waiting for it
        self.outbound.acked(conn, event_id, attempt)

    async def report(self, conn: Connection, command: protocol.Report) -> None:
        kind = "click" if command.clicked else "read"
        owned = conn.viewer.authenticated and await asyncio.to_thread(
            self.inbox.mark_user_action,
            command.notification_id,
            uuid.UUID(conn.viewer.user_id),
            clicked=command.clicked,
        )
        if not owned:
            # Not found and not yours look the same: ids of others are not confirmed.
            raise protocol.ProtocolError("not_found", f"no such notification to {kind}")
        conn.offer(
            protocol.dumps(
                {"type": "receipt", "report": kind, "notification_id": str(command.notification_id)}
            )
        )

    def refresh(self, conn: Connection, token: str) -> None:
        if not self.jwt_secret:
            raise protocol.ProtocolError("bad_token", "tokens are not accepted here")
        try:
            identity = verify_token(token, self.jwt_secret)
        except TokenError as exc:
            raise protocol.ProtocolError("bad_token", str(exc)) from None
        if not conn.viewer.authenticated or identity.user_id != conn.viewer.user_id:
            raise protocol.ProtocolError("bad_token", "a refresh token must be for the same user")
        conn.token_expires_at = identity.expires_at
        conn.offer(protocol.dumps({"type": "refreshed", "expires_at": identity.expires_at}))
