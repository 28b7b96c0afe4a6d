"""The WebSocket gateway (``clarion gateway``): one asyncio process on ``websockets``.

Life of a connection:

1. The upgrade request carries a token (query ``?token=`` or
   ``Authorization: Bearer``). A missing, forged or expired one is answered
   HTTP 401 before the WebSocket opens (anonymous connections are accepted,
   public events only, when ``CLARION_ALLOW_ANONYMOUS`` is true).
2. The ``websocket_connections`` row is inserted ``connecting`` (batched with
   other connects) before the upgrade is accepted, set ``connected`` once
   open, ``disconnecting`` when the gateway closes it (shutdown, slow
   consumer, token expiry) and ``disconnected`` with the reason at the end.
3. Counters, ``last_heartbeat`` (the last pong) and subscriptions are
   written by a periodic flush (``CLARION_GATEWAY_FLUSH_INTERVAL``), one
   batched UPDATE for all changed rows.

Events arrive on Redis (``CLARION_EVENTS_CHANNEL``) from
:func:`clarion.publish_event`; each is checked by
:func:`realtime.visibility.can_see` for every subscriber of its auction or
topics and queued to each connection's bounded queue. In-app notifications
arrive on ``clarion:user:<id>`` and go to all of that user's connections.

Background loops: the flush; acks (redeliver an unacked event after its
``ack_timeout``, at most ``CLARION_EVENT_MAX_REDELIVERIES`` times; close
connections whose token expired); the outbox relay
(:func:`clarion.events.relay_unpublished`); the sweep of rows left open by a
dead gateway (no heartbeat for 3 intervals), also run at start-up.
SIGTERM/SIGINT: every row is marked ``disconnecting``, every connection is
closed with 1001 going away, and the final rows are written before exit.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import json
import logging
import signal
import time
import urllib.parse
import uuid
from typing import Any, cast

import redis.asyncio as aioredis
import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from clarion.core.clock import utcnow
from clarion.core.db import make_engine, session_factory
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from clarion.events import relay_unpublished
from models.enums import ConnectionStatus
from models.repository import Repository
from realtime import protocol
from realtime.auth import TokenError, verify_token
from realtime.connection import SLOW_CONSUMER, Connection, Socket
from realtime.store import EventStats, Store
from realtime.visibility import (
    ANONYMOUS,
    EventView,
    Viewer,
    auction_key,
    can_see,
    client_frame,
    subscription_keys,
)
from realtime.writer import Writer

log = logging.getLogger("clarion.realtime.gateway")

USER_CHANNEL_PATTERN = "clarion:user:*"
PROTOCOL_VERSION = "1.0"
#: Event ids remembered to drop a second copy (the relay may publish twice).
SEEN_EVENTS = 50_000
#: Protocol errors tolerated before a connection is closed.
MAX_ERRORS = 50
#: Seconds a closing handshake may take before the TCP connection is dropped.
CLOSE_TIMEOUT = 2.0
#: Seconds between rounds of the connection watchdog (acks, token expiry, stalled sends).
WATCH_INTERVAL = 0.2


class Gateway:
    def __init__(self, settings: Settings) -> None:
        if not settings.jwt_secret and not settings.allow_anonymous:
            raise SettingsError(
                "CLARION_JWT_SECRET", "the gateway needs it (or CLARION_ALLOW_ANONYMOUS=true)"
            )
        if settings.jwt_secret and len(settings.jwt_secret.encode()) < 32:
            # RFC 7518 3.2: an HS256 key shorter than the hash is guessable.
            raise SettingsError("CLARION_JWT_SECRET", "must be at least 32 bytes long")
        self.settings = settings
        engine = (
            make_engine(settings.effective_database_url, pool_size=4, max_overflow=4)
            if not settings.embedded
            else make_engine(settings.effective_database_url)
        )
        self.engine = engine
        self.store = Store(engine)
        self.repository = Repository(session_factory(engine))
        self.writer: Writer | None = None
        self.connections: set[Connection] = set()
        self.by_key: dict[str, set[Connection]] = collections.defaultdict(set)
        self.by_user: dict[str, set[Connection]] = collections.defaultdict(set)
        self.seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.event_stats: dict[str, EventStats] = {}
        self.received: list[tuple[uuid.UUID, uuid.UUID, dt.datetime]] = []
        self.server: Server | None = None
        self.stopping = asyncio.Event()

    # --- run ---------------------------------------------------------------------

    async def run(self) -> None:
        s = self.settings
        self.writer = Writer(self.store)
        self.writer.start()
        swept = await asyncio.to_thread(self.store.sweep_stale, older_than=self._stale_after())
        if swept:
            log.warning("closed %d connection rows left open by a lost gateway", swept)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.server = await serve(
            self._handle,
            s.gateway_host,
            s.gateway_port,
            process_request=self._authenticate,
            create_connection=Socket,
            compression="deflate" if s.gateway_compression else None,
            ping_interval=s.gateway_heartbeat,
            ping_timeout=s.gateway_heartbeat_timeout,
            close_timeout=CLOSE_TIMEOUT,
            max_size=s.gateway_max_message,
            server_header=None,
        )
        log.info("gateway listening on %s:%s", s.gateway_host, s.gateway_port)
        tasks = [
            asyncio.create_task(self._redis_loop(), name="redis"),
            asyncio.create_task(self._every(s.gateway_flush_interval, self.flush), name="flush"),
            asyncio.create_task(self._every(WATCH_INTERVAL, self._watch), name="watch"),
            asyncio.create_task(
                self._every(max(s.event_relay_after / 2, 0.5), self._relay), name="relay"
            ),
            asyncio.create_task(self._every(s.gateway_heartbeat, self._sweep), name="sweep"),
        ]
        print(f"clarion gateway listening on {s.gateway_host}:{s.gateway_port}", flush=True)
        await self.stopping.wait()
        log.info("shutting down: closing %d connections", len(self.connections))
        await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        assert self.writer is not None and self.server is not None
        for conn in list(self.connections):
            conn.closing_reason = "gateway shutdown"
            self.writer.update(conn.connection_id, connection_status=ConnectionStatus.DISCONNECTING)
        await self.writer.flush()
        self.server.close(close_connections=True)  # 1001 going away
        await self.server.wait_closed()  # every handler has written its final row
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.flush()
        await self.writer.close()
        self.engine.dispose()
        log.info("gateway stopped")

    def _stale_after(self) -> float:
        s = self.settings
        return 3 * s.gateway_heartbeat + s.gateway_heartbeat_timeout + s.gateway_flush_interval

    async def _every(self, interval: float, job: Any) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception:
                log.exception("background job %s failed", getattr(job, "__name__", job))

    # --- connect -----------------------------------------------------------------

    async def _authenticate(self, ws: ServerConnection, request: Request) -> Response | None:
        socket = cast(Socket, ws)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        token = _first(query, "token") or _bearer(request.headers)
        s = self.settings
        if token is None:
            if not s.allow_anonymous:
                return _refuse(socket, "missing token")
            viewer, expires, sid = Viewer(ANONYMOUS, False), None, None
        else:
            if not s.jwt_secret:
                return _refuse(socket, "tokens are not accepted here")
            try:
                identity = verify_token(token, s.jwt_secret)
            except TokenError as exc:
                return _refuse(socket, str(exc))
            viewer, expires, sid = (
                Viewer(identity.user_id, True),
                identity.expires_at,
                identity.session_id,
            )
        session_id = _first(query, "session") or sid or uuid.uuid4().hex
        conn = Connection(
            self,
            socket,
            viewer,
            session_id=session_id[:255],
            token_expires_at=expires,
            queue_size=s.gateway_outbound_queue,
        )
        device = _first(query, "device")
        now = utcnow()
        row: dict[str, Any] = {
            "connection_id": conn.connection_id,
            "user_id": uuid.UUID(viewer.user_id),
            "session_id": conn.session_id,
            "socket_id": str(socket.id),
            "connection_status": ConnectionStatus.CONNECTING,
            "client_ip": (socket.remote_address or ("0.0.0.0",))[0],  # noqa: S104
            "user_agent": request.headers.get("User-Agent", "")[:1000],
            "protocol_version": PROTOCOL_VERSION,
            "compression_enabled": False,
            "heartbeat_interval": round(s.gateway_heartbeat),
            "last_heartbeat": now,
            "connected_at": now,
            "subscriptions": [],
            "auction_subscriptions": [],
            "device_info": _device_info(device, request.headers),
            "created_at": now,
            "updated_at": now,
        }
        assert self.writer is not None
        try:
            await self.writer.insert(row)
        except Exception:
            return socket.respond(503, "gateway cannot record the connection\n")
        socket.clarion = conn
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        socket = cast(Socket, ws)
        conn = socket.clarion
        assert conn is not None and self.writer is not None
        compression = any(
            getattr(ext, "name", "") == "permessage-deflate" for ext in socket.protocol.extensions
        )
        self.writer.update(
            conn.connection_id,
            connection_status=ConnectionStatus.CONNECTED,
            compression_enabled=compression,
        )
        self.connections.add(conn)
        if conn.viewer.authenticated:
            self.by_user[conn.viewer.user_id].add(conn)
        conn.writer_task = asyncio.create_task(self._write(conn))
        conn.offer(
            protocol.dumps(
                {
                    "type": "welcome",
                    "connection_id": str(conn.connection_id),
                    "user_id": conn.viewer.user_id if conn.viewer.authenticated else None,
                    "session_id": conn.session_id,
                    "protocol": PROTOCOL_VERSION,
                    "heartbeat_interval": self.settings.gateway_heartbeat,
                }
            )
        )
        try:
            async for message in socket:
                conn.msgs_in += 1
                conn.bytes_in += len(message.encode() if isinstance(message, str) else message)
                await self._on_message(conn, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self._forget(conn)
            reason = conn.closing_reason or _close_reason(socket)
            self.writer.update(
                conn.connection_id,
                connection_status=ConnectionStatus.DISCONNECTED,
                disconnected_at=utcnow(),
                disconnect_reason=reason[:255],
                last_heartbeat=_heartbeat(socket),
                **conn.counters(),
                **conn.subscription_values(),
            )
            log.info("connection %s closed: %s", conn.connection_id, reason)

    async def _write(self, conn: Connection) -> None:
        with contextlib.suppress(websockets.ConnectionClosed):
            await conn.write_loop()

    def _forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for key in (*conn.topics, *(auction_key(a) for a in conn.auctions)):
            self._unindex(key, conn)
        users = self.by_user.get(conn.viewer.user_id)
        if users is not None:
            users.discard(conn)
            if not users:
                del self.by_user[conn.viewer.user_id]
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        if conn.pending_acks:
            for event, _attempt, _deadline in conn.pending_acks.values():
                self._stats(event.event_id).unacked += 1
            conn.pending_acks = None

    def _unindex(self, key: str, conn: Connection) -> None:
        members = self.by_key.get(key)
        if members is not None:
            members.discard(conn)
            if not members:
                del self.by_key[key]

    def cut_off(self, conn: Connection, code: int, reason: str) -> None:
        """Close a connection from the server side (slow consumer, expired token...)."""
        if conn.closing_reason is not None:
            return
        conn.closing_reason = reason
        log.warning("closing connection %s: %s", conn.connection_id, reason)
        assert self.writer is not None
        self.writer.update(conn.connection_id, connection_status=ConnectionStatus.DISCONNECTING)
        # Drop what is queued: the point is to stop holding memory for this client.
        while not conn.queue.empty():
            conn.queue.get_nowait()
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        asyncio.get_running_loop().create_task(_close(conn.socket, code, reason))

    # --- client frames -------------------------------------------------------------

    async def _on_message(self, conn: Connection, message: str | bytes) -> None:
        try:
            command = protocol.parse(message)
            if isinstance(command, protocol.Subscribe):
                await self._subscribe(conn, command)
            elif isinstance(command, protocol.Unsubscribe):
                self._unsubscribe(conn, command)
            elif isinstance(command, protocol.Ack):
                self._ack(conn, command.event_id)
            elif isinstance(command, protocol.Report):
                await self._report(conn, command)
            elif isinstance(command, protocol.Refresh):
                self._refresh(conn, command.token)
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

    async def _subscribe(self, conn: Connection, command: protocol.Subscribe) -> None:
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
        for key in keys:
            self.by_key[key].add(conn)
        conn.subs_dirty = True
        replayed = 0
        if resume:
            try:
                events, gaps = await asyncio.to_thread(
                    self.store.history,
                    resume,
                    conn.viewer,
                    window=self.settings.event_history_seconds,
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
                self._remember(event.event_id)
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

    def _unsubscribe(self, conn: Connection, command: protocol.Unsubscribe) -> None:
        for topic in command.topics:
            conn.topics.discard(topic)
            self._unindex(topic, conn)
        for auction in command.auctions:
            conn.auctions.discard(auction)
            self._unindex(auction_key(auction), conn)
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

    def _ack(self, conn: Connection, event_id: str) -> None:
        attempt = conn.take_ack(event_id)
        if attempt is None:
            return  # a late or repeated ack: nothing is waiting for it
        stats = self._stats(event_id)
        stats.acked += 1
        stats.acks[f"{conn.viewer.user_id}/{conn.connection_id}"] = {
            "user_id": conn.viewer.user_id,
            "connection_id": str(conn.connection_id),
            "acked_at": utcnow().isoformat(),
            "attempts": attempt,
        }

    async def _report(self, conn: Connection, command: protocol.Report) -> None:
        kind = "click" if command.clicked else "read"
        owned = conn.viewer.authenticated and await asyncio.to_thread(
            self.repository.mark_user_action,
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

    def _refresh(self, conn: Connection, token: str) -> None:
        if not self.settings.jwt_secret:
            raise protocol.ProtocolError("bad_token", "tokens are not accepted here")
        try:
            identity = verify_token(token, self.settings.jwt_secret)
        except TokenError as exc:
            raise protocol.ProtocolError("bad_token", str(exc)) from None
        if not conn.viewer.authenticated or identity.user_id != conn.viewer.user_id:
            raise protocol.ProtocolError("bad_token", "a refresh token must be for the same user")
        conn.token_expires_at = identity.expires_at
        conn.offer(protocol.dumps({"type": "refreshed", "expires_at": identity.expires_at}))

    # --- outbound bookkeeping (called by Connection.write_loop) ----------------------

    def event_sent(self, conn: Connection, event: EventView, attempt: int) -> None:
        stats = self._stats(event.event_id)
        if attempt == 1:
            stats.sent += 1
        else:
            stats.redelivered += 1
        if event.ack_required:
            conn.await_ack(event, attempt)

    def notification_sent(self, conn: Connection, notification_id: str) -> None:
        with contextlib.suppress(ValueError):
            self.received.append(
                (uuid.UUID(notification_id), uuid.UUID(conn.viewer.user_id), utcnow())
            )

    def _stats(self, event_id: str) -> EventStats:
        stats = self.event_stats.get(event_id)
        if stats is None:
            stats = self.event_stats[event_id] = EventStats()
        return stats

    # --- inbound from Redis ------------------------------------------------------------

    async def _redis_loop(self) -> None:
        channel = self.settings.events_channel
        while True:
            client = aioredis.Redis.from_url(self.settings.redis_url)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                await pubsub.psubscribe(USER_CHANNEL_PATTERN)
                log.info("listening for events on %s and %s", channel, USER_CHANNEL_PATTERN)
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
        if self._remember(event.event_id):
            return 0
        now = time.time()
        if event.expires_at is not None and event.expires_at <= now:
            return 0
        keys = list(subscription_keys(event))
        if len(keys) == 1:
            targets: Any = self.by_key.get(keys[0], ())
        else:
            targets = set().union(*(self.by_key.get(k, ()) for k in keys))
        nbytes = len(event.frame.encode())
        count = 0
        for conn in list(targets):
            if can_see(event, conn.viewer, now):
                conn.deliver(event, nbytes)
                count += 1
        return count

    def dispatch_notification(self, channel: bytes | str, raw: bytes | str) -> None:
        name = channel.decode() if isinstance(channel, bytes) else channel
        user_id = name.rsplit(":", 1)[-1]
        conns = self.by_user.get(user_id)
        if not conns:
            return
        text = raw.decode() if isinstance(raw, bytes) else raw
        try:
            notification_id = str(json.loads(text).get("notification_id") or "") or None
        except (ValueError, AttributeError):
            return
        nbytes = len(text.encode())
        for conn in list(conns):
            conn.offer(text, nbytes=nbytes, notification_id=notification_id)

    def _remember(self, event_id: str) -> bool:
        """Record an event id; True if it was already seen."""
        if event_id in self.seen:
            return True
        self.seen[event_id] = None
        if len(self.seen) > SEEN_EVENTS:
            self.seen.popitem(last=False)
        return False

    # --- periodic jobs -----------------------------------------------------------------

    async def flush(self) -> None:
        """Write changed counters and subscriptions, event stats and in-app receipts."""
        assert self.writer is not None
        for conn in list(self.connections):
            values = conn.counters()
            beat = _heartbeat(conn.socket)
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
        stats, self.event_stats = self.event_stats, {}
        received, self.received = self.received, []
        await self.writer.flush()
        if stats:
            await asyncio.to_thread(self.store.record_event_stats, stats)
        if received:
            await asyncio.to_thread(self.repository.mark_in_app_received, received)

    async def _watch(self) -> None:
        """Cut off expired tokens and stalled clients; redeliver unacked events."""
        now = time.monotonic()
        wall = time.time()
        limit = self.settings.event_max_redeliveries
        send_timeout = self.settings.gateway_send_timeout
        for conn in list(self.connections):
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
                    self._stats(event.event_id).unacked += 1
                    continue
                if not can_see(event, conn.viewer, wall):
                    continue  # expired meanwhile: never delivered again
                frame = protocol.dumps(client_frame(event.payload, attempt=attempt + 1))
                conn.offer(frame, event=event, attempt=attempt + 1)

    async def _relay(self) -> None:
        s = self.settings
        count = await asyncio.to_thread(
            relay_unpublished,
            self.engine,
            older_than=s.event_relay_after,
            window=s.event_history_seconds,
        )
        if count:
            log.warning("relay published %d event(s) their publisher did not", count)

    async def _sweep(self) -> None:
        await asyncio.to_thread(self.store.sweep_stale, older_than=self._stale_after())


async def _close(socket: Socket, code: int, reason: str) -> None:
    """Close from the server side, dropping the TCP connection if the client does not
    take the close frame in time (a client that stopped reading never will: websockets'
    ``close`` would wait for its buffers forever)."""
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await socket.close(code, reason)
    except TimeoutError:
        socket.transport.abort()


def _refuse(socket: Socket, why: str) -> Response:
    log.info("refused a connection: %s", why)
    response = socket.respond(401, f"{why}\n")
    return response


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _bearer(headers: Headers) -> str | None:
    value = headers.get("Authorization", "")
    if value.lower().startswith("bearer "):
        return value[7:].strip() or None
    return None


def _device_info(raw: str | None, headers: Headers) -> dict[str, Any] | None:
    info: dict[str, Any] = {}
    if raw:
        try:
            parsed = json.loads(raw)
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and len(raw) <= 2000:
            info.update(parsed)
    origin = headers.get("Origin")
    if origin:
        info["origin"] = origin[:500]
    return info or None


def _heartbeat(socket: Socket) -> dt.datetime | None:
    if not socket.last_pong:
        return None
    return dt.datetime.fromtimestamp(socket.last_pong, dt.UTC)


def _close_reason(socket: Socket) -> str:
    proto = socket.protocol
    sent, rcvd = proto.close_sent, proto.close_rcvd
    if sent is not None and sent.code == 1011 and "keepalive" in sent.reason:
        return "missed heartbeats (keepalive ping timeout)"
    if rcvd is not None:
        return f"client closed ({rcvd.code}{' ' + rcvd.reason if rcvd.reason else ''})"
    if sent is not None:
        return f"closed by gateway ({sent.code} {sent.reason})".strip()
    return "connection lost (1006)"


def run_gateway(settings: Settings) -> None:
    asyncio.run(Gateway(settings).run())
