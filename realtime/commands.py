"""Client commands: what the gateway does with each frame a client sends.

``subscribe`` (with an optional resume from history), ``unsubscribe``,
``ack``, ``read`` / ``click`` reports, ``refresh`` of the token and
``ping``. A frame that cannot be used is answered with an ``error`` frame
carrying the :class:`realtime.protocol.ProtocolError` code; a client that
sends more than :data:`MAX_ERRORS` of them is cut off.

A subscribe is refused whole, and the refusal counted, when it comes faster than
the connection's bucket allows (``rate_limited``), names a key the token's
channel claim does not grant (``forbidden``), or would take the connection past
``CLARION_GATEWAY_MAX_SUBSCRIPTIONS`` (``too_many_subscriptions``).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable

from models.inbox import Inbox
from realtime import protocol
from realtime.auth import TokenError, Verifier
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
        verifier: Verifier | None,
        history_seconds: float,
        max_subscriptions: int,
        subscribe_rate: float,
        index: SubscriptionIndex,
        store: Store,
        inbox: Inbox,
        outbound: Outbound,
        remember: Callable[[str], bool],
        cut_off: Callable[[Connection, int, str], None],
        refused: Callable[[str], None],
    ) -> None:
        self.verifier = verifier
        self.history_seconds = history_seconds
        self.max_subscriptions = max_subscriptions
        self.subscribe_rate = subscribe_rate
        #: counts a refusal by kind (realtime.limits.REFUSALS)
        self.refused = refused
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
                await self.refresh(conn, command.token)
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
        if not conn.bucket.take():
            self.refused("subscribe_rate")
            raise protocol.ProtocolError(
                "rate_limited", f"at most {self.subscribe_rate:g} subscribe requests per second"
            )
        keys = [*command.topics, *(auction_key(a) for a in command.auctions)]
        grant = conn.grant
        if grant is not None:
            denied = [k for k in keys if not grant.allows(k)]
            if denied:
                self.refused("channel_claim")
                raise protocol.ProtocolError(
                    "forbidden", f"the token does not allow {', '.join(denied[:5])}"
                )
        total = len(conn.topics | set(command.topics)) + len(conn.auctions | set(command.auctions))
        if total > self.max_subscriptions:
            self.refused("subscriptions")
            raise protocol.ProtocolError(
                "too_many_subscriptions", f"at most {self.max_subscriptions} per connection"
            )
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
        self._drop(conn, list(command.topics), list(command.auctions))
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

    async def refresh(self, conn: Connection, token: str) -> None:
        if self.verifier is None:
            raise protocol.ProtocolError("bad_token", "tokens are not accepted here")
        try:
            identity = await self.verifier.verify(token)
        except TokenError as exc:
            raise protocol.ProtocolError("bad_token", str(exc)) from None
        if not conn.viewer.authenticated or identity.user_id != conn.viewer.user_id:
            raise protocol.ProtocolError("bad_token", "a refresh token must be for the same user")
        conn.token_expires_at = identity.expires_at
        conn.grant = grant = identity.grant
        frame: dict[str, object] = {"type": "refreshed", "expires_at": identity.expires_at}
        if grant is not None:
            # The new token's claim rules from now on: what it no longer grants is dropped.
            topics = [t for t in conn.topics if not grant.allows(t)]
            auctions = [a for a in conn.auctions if not grant.allows(auction_key(a))]
            if topics or auctions:
                self._drop(conn, topics, auctions)
                frame["dropped"] = sorted([*topics, *(auction_key(a) for a in auctions)])
        conn.offer(protocol.dumps(frame))

    def _drop(self, conn: Connection, topics: list[str], auctions: list[str]) -> None:
        for topic in topics:
            conn.topics.discard(topic)
            self.index.unsubscribe(topic, conn)
        for auction in auctions:
            conn.auctions.discard(auction)
            self.index.unsubscribe(auction_key(auction), conn)
        conn.subs_dirty = True
