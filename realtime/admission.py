"""Upgrade and authentication, and a connection's row from ``connecting`` to ``disconnected``.

The upgrade request is checked in this order, each refusal counted
(:class:`realtime.limits.Refusals`): its ``Origin`` (HTTP 403 before the upgrade,
:class:`realtime.limits.Origins`); its token (query ``?token=`` or
``Authorization: Bearer``, :class:`realtime.auth.Verifier`): a missing, forged or
expired one is answered HTTP 401 before the WebSocket opens, 503 while the signing
keys cannot be had (anonymous connections are accepted, public events only, when
``CLARION_ALLOW_ANONYMOUS`` is true); then the connection limits per user and per
client IP (:class:`realtime.limits.ConnectionLimits`): a connection over a limit
opens and is closed at once with the limit's close code, so browsers see why.

The ``websocket_connections`` row (``client_ip`` as resolved above) is inserted
``connecting`` (batched with other connects) before the upgrade is accepted, set
``connected`` once open, and ``disconnected`` with the reason, the counters and the
subscriptions when the handler ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import urllib.parse
import uuid
from typing import Any, cast

import websockets
from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from clarion.core.clock import utcnow
from clarion.core.settings import Settings
from models.enums import ConnectionStatus
from realtime import protocol
from realtime.auth import Grant, TokenError, Verifier
from realtime.commands import Commands
from realtime.connection import Connection, Hub, Socket
from realtime.index import SubscriptionIndex
from realtime.limits import CLOSE_USER_LIMIT, ClientAddress, ConnectionLimits, Origins, Refusals
from realtime.outbound import Outbound
from realtime.visibility import ANONYMOUS, Viewer
from realtime.writer import Writer

log = logging.getLogger("clarion.realtime.gateway")

PROTOCOL_VERSION = "1.0"


class Admission:
    def __init__(
        self,
        settings: Settings,
        *,
        hub: Hub,
        writer: Writer,
        index: SubscriptionIndex,
        commands: Commands,
        outbound: Outbound,
        verifier: Verifier | None,
        refusals: Refusals,
    ) -> None:
        self.settings = settings
        self.hub = hub
        self.writer = writer
        self.index = index
        self.commands = commands
        self.outbound = outbound
        self.verifier = verifier
        self.refusals = refusals
        self.origins = Origins(
            settings.gateway_allowed_origins, allow_none=settings.gateway_allow_no_origin
        )
        self.addresses = ClientAddress(settings.gateway_trusted_proxies)
        self.limits = ConnectionLimits(
            per_user=settings.gateway_max_connections_per_user,
            per_ip=settings.gateway_max_connections_per_ip,
            close_oldest=settings.gateway_limit_policy == "close_oldest",
        )

    async def authenticate(self, ws: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request``: refuse, or record the connection and accept."""
        socket = cast(Socket, ws)
        refused = self.origins.refuses(request.headers.get("Origin"))
        if refused is not None:
            self.refusals.add("origin")
            return _refuse(socket, refused, 403)
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
        token = _first(query, "token") or _bearer(request.headers)
        s = self.settings
        grant: Grant | None = None
        if token is None:
            if not s.allow_anonymous:
                self.refusals.add("token")
                return _refuse(socket, "missing token")
            viewer, expires, sid = Viewer(ANONYMOUS, False), None, None
        else:
            if self.verifier is None:
                self.refusals.add("token")
                return _refuse(socket, "tokens are not accepted here")
            try:
                identity = await self.verifier.verify(token)
            except TokenError as exc:
                self.refusals.add("token")
                return _refuse(socket, str(exc), exc.status)
            viewer, expires, sid, grant = (
                Viewer(identity.user_id, True),
                identity.expires_at,
                identity.session_id,
                identity.grant,
            )
        peer = (socket.remote_address or ("0.0.0.0",))[0]  # noqa: S104
        client_ip = self.addresses.of(peer, request.headers.get_all("X-Forwarded-For"))
        session_id = _first(query, "session") or sid or uuid.uuid4().hex
        conn = Connection(
            self.hub,
            socket,
            viewer,
            session_id=session_id[:255],
            token_expires_at=expires,
            queue_size=s.gateway_outbound_queue,
            grant=grant,
            subscribe_rate=s.gateway_subscribe_rate,
        )
        over, evict = self.limits.admit(
            conn, viewer.user_id if viewer.authenticated else None, client_ip
        )
        if over is not None:
            code, why = over
            self.refusals.add("user_limit" if code == CLOSE_USER_LIMIT else "ip_limit")
            log.info("refused a connection of %s from %s: %s", viewer.user_id, client_ip, why)
            socket.refusal = over
            return None  # opened, then closed with the limit's code (see handle)
        for old, code, why in evict:
            assert isinstance(old, Connection)
            if old in self.index.connections:
                self.hub.cut_off(old, code, why)
            else:  # still in its handshake: closed as soon as it opens (see handle)
                old.closing_reason = why
                old.socket.refusal = (code, why)
        socket.on_lost = lambda: self.limits.release(conn)
        device = _first(query, "device")
        now = utcnow()
        row: dict[str, Any] = {
            "connection_id": conn.connection_id,
            "user_id": uuid.UUID(viewer.user_id),
            "session_id": conn.session_id,
            "socket_id": str(socket.id),
            "connection_status": ConnectionStatus.CONNECTING,
            "client_ip": client_ip,
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
        try:
            await self.writer.insert(row)
        except Exception:
            self.limits.release(conn)
            return socket.respond(503, "gateway cannot record the connection\n")
        socket.clarion = conn
        return None

    async def handle(self, ws: ServerConnection) -> None:
        """websockets' connection handler: welcome, read frames until the end, final row."""
        socket = cast(Socket, ws)
        if socket.refusal is not None:
            await socket.close_within(*socket.refusal)
            if socket.clarion is not None:  # replaced before it opened: its row ends here
                self.writer.update(
                    socket.clarion.connection_id,
                    connection_status=ConnectionStatus.DISCONNECTED,
                    disconnected_at=utcnow(),
                    disconnect_reason=socket.refusal[1],
                )
            return
        conn = socket.clarion
        assert conn is not None
        compression = any(
            getattr(ext, "name", "") == "permessage-deflate" for ext in socket.protocol.extensions
        )
        self.writer.update(
            conn.connection_id,
            connection_status=ConnectionStatus.CONNECTED,
            compression_enabled=compression,
        )
        self.index.open(conn)
        conn.writer_task = asyncio.create_task(_write(conn))
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
                await self.commands.on_message(conn, message)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.limits.release(conn)
            self._forget(conn)
            reason = conn.closing_reason or socket.end_reason()
            self.writer.update(
                conn.connection_id,
                connection_status=ConnectionStatus.DISCONNECTED,
                disconnected_at=utcnow(),
                disconnect_reason=reason[:255],
                last_heartbeat=socket.heartbeat(),
                **conn.counters(),
                **conn.subscription_values(),
            )
            log.info("connection %s closed: %s", conn.connection_id, reason)

    def _forget(self, conn: Connection) -> None:
        self.index.close(conn)
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        if conn.pending_acks:
            for event, _attempt, _deadline in conn.pending_acks.values():
                self.outbound.unacked(event.event_id)
            conn.pending_acks = None


async def _write(conn: Connection) -> None:
    with contextlib.suppress(websockets.ConnectionClosed):
        await conn.write_loop()


def _refuse(socket: Socket, why: str, status: int = 401) -> Response:
    log.info("refused a connection: %s", why)
    return socket.respond(status, f"{why}\n")


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
