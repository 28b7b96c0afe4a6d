"""One client connection: its identity, subscriptions, counters and bounded outbound queue.

Frames for a client go through :meth:`Connection.offer` into an
``asyncio.Queue`` of bounded size, drained by one writer task that awaits
each ``send`` (so TCP backpressure reaches the queue). When the queue is
full the client is not keeping up: the connection is cut off (close code
1008, reason ``slow consumer``) instead of letting memory grow; websockets'
own ``broadcast()`` has no such bound, which is why it is not used.

A client that stops reading may also stall the writer with fewer frames than
the bound queued: the socket's buffers fill, the writer waits in ``send``,
and websockets' keepalive ping waits behind the same buffers, so it never
times out either. :attr:`Connection.send_started` (the monotonic time the
frame in flight was handed to the socket) lets the gateway's watchdog cut
such a client off after ``CLARION_GATEWAY_SEND_TIMEOUT``.

A connection reports to the gateway through :class:`Hub`, three callbacks,
so that it does not depend on the gateway that holds it.

Counters (``bytes_*`` are the payload bytes of data frames, UTF-8; control
frames are not counted) live here and are written by the gateway's periodic
flush, never per message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import math
import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from websockets.asyncio.server import ServerConnection

from realtime.auth import Grant
from realtime.limits import Bucket
from realtime.visibility import EventView, Viewer

SLOW_CONSUMER = "slow consumer"
#: Seconds a closing handshake may take before the TCP connection is dropped.
CLOSE_TIMEOUT = 2.0


class Socket(ServerConnection):
    """websockets' server connection, remembering when the last pong arrived."""

    clarion: Connection | None = None
    last_pong: float = 0.0
    #: (close code, reason): admitted only to be closed at once (a connection limit)
    refusal: tuple[int, str] | None = None
    #: called once when the TCP connection is gone, however the handshake went
    on_lost: Callable[[], None] | None = None

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        callback, self.on_lost = self.on_lost, None
        if callback is not None:
            callback()

    def acknowledge_pings(self, data: bytes) -> None:
        super().acknowledge_pings(data)
        self.last_pong = time.time()

    def heartbeat(self) -> dt.datetime | None:
        """When the last pong arrived (the row's ``last_heartbeat``), if one did."""
        if not self.last_pong:
            return None
        return dt.datetime.fromtimestamp(self.last_pong, dt.UTC)

    def end_reason(self) -> str:
        """Why the connection ended, as the row's ``disconnect_reason`` says it."""
        proto = self.protocol
        sent, rcvd = proto.close_sent, proto.close_rcvd
        if sent is not None and sent.code == 1011 and "keepalive" in sent.reason:
            return "missed heartbeats (keepalive ping timeout)"
        if rcvd is not None:
            return f"client closed ({rcvd.code}{' ' + rcvd.reason if rcvd.reason else ''})"
        if sent is not None:
            return f"closed by gateway ({sent.code} {sent.reason})".strip()
        return "connection lost (1006)"

    async def close_within(self, code: int, reason: str) -> None:
        """Close from the server side, dropping the TCP connection if the client does not
        take the close frame in time (a client that stopped reading never will: websockets'
        ``close`` would wait for its buffers forever)."""
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.close(code, reason)
        except TimeoutError:
            self.transport.abort()


class Hub(Protocol):
    """What a connection needs of the gateway that holds it."""

    def cut_off(self, conn: Connection, code: int, reason: str) -> None:
        """Close ``conn`` from the server side (slow consumer, expired token...)."""

    def event_sent(self, conn: Connection, event: EventView, attempt: int) -> None:
        """An event frame went out to ``conn`` (``attempt`` 1 is the first send)."""

    def notification_sent(self, conn: Connection, notification_id: str) -> None:
        """An in-app notification frame went out to ``conn``."""


#: (frame, payload bytes, event or None, attempt, notification id or None)
Item = tuple[str, int, EventView | None, int, str | None]


class Connection:
    __slots__ = (
        "auctions",
        "bucket",
        "bytes_in",
        "bytes_out",
        "closing_reason",
        "connection_id",
        "error_count",
        "flushed",
        "grant",
        "hub",
        "last_error",
        "msgs_in",
        "msgs_out",
        "pending_acks",
        "queue",
        "replay_buffer",
        "replayed_unpublished",
        "send_started",
        "session_id",
        "socket",
        "subs_dirty",
        "token_expires_at",
        "topics",
        "viewer",
        "writer_task",
    )

    def __init__(
        self,
        hub: Hub,
        socket: Socket,
        viewer: Viewer,
        *,
        session_id: str,
        token_expires_at: float | None,
        queue_size: int,
        grant: Grant | None = None,
        subscribe_rate: float = 10.0,
    ) -> None:
        self.hub = hub
        self.socket = socket
        self.viewer = viewer
        self.connection_id = uuid.uuid4()
        self.session_id = session_id
        self.token_expires_at = token_expires_at
        #: what the token's channel claim allows (None: anything)
        self.grant = grant
        #: subscribe requests this connection may still send now
        self.bucket = Bucket(subscribe_rate)
        self.queue: asyncio.Queue[Item] = asyncio.Queue(queue_size)
        self.topics: set[str] = set()
        self.auctions: set[str] = set()
        self.bytes_in = self.bytes_out = self.msgs_in = self.msgs_out = 0
        self.error_count = 0
        self.last_error: str | None = None
        #: the values last written, to skip rows that did not change
        self.flushed: tuple[Any, ...] = ()
        self.subs_dirty = False
        #: event_id -> [event, attempt, deadline (monotonic)]
        self.pending_acks: dict[str, list[Any]] | None = None
        #: while a resume is read from history, live events wait here
        self.replay_buffer: list[EventView] | None = None
        #: events replayed before they were published: their live copy is dropped
        self.replayed_unpublished: set[str] | None = None
        self.closing_reason: str | None = None
        #: monotonic time the frame in flight was handed to the socket; 0.0 when idle
        self.send_started = 0.0
        self.writer_task: asyncio.Task[None] | None = None

    # --- outbound ----------------------------------------------------------------

    def offer(
        self,
        frame: str,
        *,
        nbytes: int | None = None,
        event: EventView | None = None,
        attempt: int = 1,
        notification_id: str | None = None,
    ) -> None:
        """Queue a frame for the client; cut the client off if its queue is full."""
        if self.closing_reason is not None:
            return
        size = len(frame.encode()) if nbytes is None else nbytes
        try:
            self.queue.put_nowait((frame, size, event, attempt, notification_id))
        except asyncio.QueueFull:
            self.hub.cut_off(self, 1008, SLOW_CONSUMER)

    def deliver(self, event: EventView, nbytes: int) -> None:
        """A live event for this client (already checked for visibility)."""
        if self.replay_buffer is not None:
            self.replay_buffer.append(event)
            return
        if self.replayed_unpublished and event.event_id in self.replayed_unpublished:
            self.replayed_unpublished.discard(event.event_id)
            return
        self.offer(event.frame, nbytes=nbytes, event=event)

    async def write_loop(self) -> None:
        """Send queued frames in order, one at a time (awaiting TCP backpressure)."""
        socket, queue, hub = self.socket, self.queue, self.hub
        while True:
            frame, size, event, attempt, notification_id = await queue.get()
            if event is not None and attempt > 1:
                pending = self.pending_acks
                if pending is None or event.event_id not in pending:
                    continue  # acked while the redelivery waited in the queue
            self.send_started = time.monotonic()
            await socket.send(frame)
            self.send_started = 0.0
            self.bytes_out += size
            self.msgs_out += 1
            if event is not None:
                hub.event_sent(self, event, attempt)
            elif notification_id is not None:
                hub.notification_sent(self, notification_id)

    def stalled(self, now: float, timeout: float) -> bool:
        """True if the frame in flight has waited ``timeout`` seconds for the socket."""
        return self.send_started != 0.0 and now - self.send_started >= timeout

    # --- acks --------------------------------------------------------------------

    def await_ack(self, event: EventView, attempt: int) -> None:
        if self.pending_acks is None:
            self.pending_acks = {}
        self.pending_acks[event.event_id] = [
            event,
            attempt,
            time.monotonic() + event.ack_timeout,
        ]

    def take_ack(self, event_id: str) -> int | None:
        """The attempt an ack answers, or None if the event is not awaiting one."""
        if not self.pending_acks:
            return None
        entry = self.pending_acks.pop(event_id, None)
        return None if entry is None else int(entry[1])

    def due_acks(self, now: float) -> list[list[Any]]:
        """Entries past their deadline; they wait (deadline inf) until resent or dropped."""
        if not self.pending_acks:
            return []
        due = [e for e in self.pending_acks.values() if e[2] <= now]
        for entry in due:
            entry[2] = math.inf
        return due

    # --- row ---------------------------------------------------------------------

    def counters(self) -> dict[str, Any]:
        return {
            "bytes_sent": self.bytes_out,
            "bytes_received": self.bytes_in,
            "messages_sent": self.msgs_out,
            "messages_received": self.msgs_in,
            "error_count": self.error_count,
            "last_error": self.last_error,
        }

    def subscription_values(self) -> dict[str, Any]:
        return {
            "subscriptions": sorted(self.topics),
            "auction_subscriptions": sorted(self.auctions),
        }
