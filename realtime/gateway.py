"""The WebSocket gateway (``clarion gateway``): one asyncio process on ``websockets``.

This module is the gateway's life: it checks the settings, builds the parts,
runs them, and on SIGTERM/SIGINT marks every row ``disconnecting``, closes
every connection with 1001 going away, and writes the final rows before
exit. Each part has a module of its own:

* :mod:`realtime.admission`: the upgrade (origin, token, connection limits) and
  the connection row from ``connecting`` to ``disconnected``;
* :mod:`realtime.auth` and :mod:`realtime.jwks`: tokens and the keys that sign
  them (HS256 secret, the identity provider's JWKS, PEM files);
* :mod:`realtime.limits`: origins, client IPs behind proxies, connections per
  user and per IP, subscribe rate, and the count of every refusal;
* :mod:`realtime.index`: which connection wants which auction, topic, user;
* :mod:`realtime.commands`: what a client's frame does (subscribe and resume,
  unsubscribe, ack, read/click, refresh, ping);
* :mod:`realtime.fanin`: events and notifications from Redis to connections,
  each event once;
* :mod:`realtime.outbound`: sends, redeliveries, acks and in-app receipts
  since the last flush;
* :mod:`realtime.jobs`: flush, watchdog (acks, token expiry, stalled
  sends), outbox relay, sweep of rows left open by a dead gateway;
* :mod:`realtime.connection`: one client's queue and writer, and the
  :class:`~realtime.connection.Hub` it reports to (this class);
* :mod:`realtime.presence`: who is connected and subscribed where, mirrored
  into Redis for the delivery rules (:mod:`workers.presence` reads it);
* :mod:`realtime.fanout`: the optional per-event fan-out record
  (``CLARION_GATEWAY_FANOUT_LOG``);
* :mod:`realtime.processes`: ``clarion gateway --processes N``, N of these
  processes on one port (``SO_REUSEPORT``).

``GET /healthz`` on the gateway's port answers 200 while the gateway can
receive events and 503 with the reason while its Redis subscription is down
(:meth:`Gateway.health`); its body also counts the refusals by kind and shows
the JWKS's state. ``GET /metrics`` is Prometheus text (:mod:`realtime.metrics`).

Events arrive on Redis (``CLARION_EVENTS_CHANNEL``) from
:func:`clarion.publish_event` (:mod:`realtime.outbox`); in-app notifications
on ``clarion:user:<id>`` (:mod:`realtime.wire`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
import signal
import urllib.parse
from collections.abc import Callable
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, ProcessCollector, generate_latest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from clarion.core.db import make_engine, session_factory
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.enums import ConnectionStatus
from models.inbox import Inbox
from realtime import protocol
from realtime.admission import Admission
from realtime.auth import Verifier
from realtime.commands import Commands
from realtime.connection import CLOSE_TIMEOUT, Connection, Socket
from realtime.fanin import FanIn
from realtime.fanout import FanoutLog
from realtime.index import SubscriptionIndex
from realtime.jobs import WATCH_INTERVAL, Jobs, every
from realtime.limits import Refusals
from realtime.metrics import GatewayMetrics, GatewayState
from realtime.outbound import Outbound
from realtime.outbox import Outlet, redis_client
from realtime.presence import PresenceWriter
from realtime.store import Store
from realtime.visibility import EventView
from realtime.writer import Writer

log = logging.getLogger("clarion.realtime.gateway")

#: Answered with the gateway's health instead of an upgrade (see :meth:`Gateway.health`).
HEALTH_PATH = "/healthz"
#: Answered with Prometheus text instead of an upgrade (see :meth:`Gateway.metrics_text`).
METRICS_PATH = "/metrics"


class Gateway:
    def __init__(self, settings: Settings, *, reuse_port: bool = False) -> None:
        check_settings(settings)
        self.settings = settings
        self.verifier = Verifier.from_settings(settings)
        self.refusals = Refusals()
        engine = (
            make_engine(settings.effective_database_url, pool_size=4, max_overflow=4)
            if not settings.embedded
            else make_engine(settings.effective_database_url)
        )
        self.engine = engine
        self.store = Store(engine)
        self.inbox = Inbox(session_factory(engine))
        self.writer = Writer(self.store)
        self.index = SubscriptionIndex()
        self.outbound = Outbound()
        self.reuse_port = reuse_port
        self.fanout = (
            FanoutLog(settings.gateway_fanout_log) if settings.gateway_fanout_log else None
        )
        self.metrics = GatewayMetrics()
        self.fanin = FanIn(
            self.index,
            self.store,
            redis_url=settings.redis_url,
            events_channel=settings.events_channel,
            metrics=self.metrics,
            outbound=self.outbound,
            fanout=self.fanout,
        )
        self.presence = PresenceWriter(
            self.index,
            redis_url=settings.redis_url,
            events_channel=settings.events_channel,
            ttl=settings.presence_ttl,
        )
        self.index.on_user_change = self.presence.changed
        self.metrics.registry.register(GatewayState(self.index, self.fanin, self.refusals))
        ProcessCollector(registry=self.metrics.registry)
        self.commands = Commands(
            verifier=self.verifier,
            history_seconds=settings.event_history_seconds,
            max_subscriptions=settings.gateway_max_subscriptions,
            subscribe_rate=settings.gateway_subscribe_rate,
            index=self.index,
            store=self.store,
            inbox=self.inbox,
            outbound=self.outbound,
            remember=self.fanin.remember,
            cut_off=self.cut_off,
            refused=self.refusals.add,
        )
        self.admission = Admission(
            settings,
            hub=self,
            writer=self.writer,
            index=self.index,
            commands=self.commands,
            outbound=self.outbound,
            verifier=self.verifier,
            refusals=self.refusals,
        )
        self.jobs = Jobs(
            settings,
            engine=engine,
            outlet=Outlet(redis_client(settings.redis_url), settings.events_channel),
            store=self.store,
            inbox=self.inbox,
            writer=self.writer,
            index=self.index,
            outbound=self.outbound,
            cut_off=self.cut_off,
        )
        self.server: Server | None = None
        self.stopping = asyncio.Event()

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until SIGTERM/SIGINT; ``ready`` is called once listening (instead of the
        "listening on" line, which a process of ``--processes N`` leaves to its parent)."""
        s = self.settings
        self.writer.start()
        jwks = self.verifier.jwks if self.verifier is not None else None
        if jwks is not None and not await jwks.refresh():
            # Fail closed: tokens are answered 503 until a fetch succeeds.
            log.error("no signing keys yet: asymmetric tokens are refused until the JWKS loads")
        if s.gateway_allowed_origins is None:
            log.warning("CLARION_GATEWAY_ALLOWED_ORIGINS is unset: pages of any site may connect")
        swept = await self.jobs.sweep()
        if swept:
            log.warning("closed %d connection rows left open by a lost gateway", swept)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        self.server = await serve(
            self.admission.handle,
            s.gateway_host,
            s.gateway_port,
            process_request=self.process_request,
            create_connection=Socket,
            compression="deflate" if s.gateway_compression else None,
            ping_interval=s.gateway_heartbeat,
            ping_timeout=s.gateway_heartbeat_timeout,
            close_timeout=CLOSE_TIMEOUT,
            max_size=s.gateway_max_message,
            server_header=None,
            reuse_port=self.reuse_port,
        )
        log.info("gateway listening on %s:%s", s.gateway_host, s.gateway_port)
        jobs = self.jobs
        tasks = [
            asyncio.create_task(self.fanin.run(), name="redis"),
            asyncio.create_task(every(s.gateway_flush_interval, jobs.flush), name="flush"),
            asyncio.create_task(every(WATCH_INTERVAL, jobs.watch), name="watch"),
            asyncio.create_task(every(max(s.event_relay_after / 2, 0.5), jobs.relay), name="relay"),
            asyncio.create_task(every(s.gateway_heartbeat, jobs.sweep), name="sweep"),
            asyncio.create_task(self.presence.run(), name="presence"),
        ]
        if self.fanout is not None:
            tasks.append(asyncio.create_task(every(1.0, self._expire_fanout), name="fanout"))
        if ready is None:
            print(f"clarion gateway listening on {s.gateway_host}:{s.gateway_port}", flush=True)
        else:
            ready()
        await self.stopping.wait()
        log.info("shutting down: closing %d connections", len(self.index.connections))
        await self._shutdown(tasks)

    async def _shutdown(self, tasks: list[asyncio.Task[Any]]) -> None:
        assert self.server is not None
        for conn in list(self.index.connections):
            conn.closing_reason = "gateway shutdown"
            self.writer.update(conn.connection_id, connection_status=ConnectionStatus.DISCONNECTING)
        await self.writer.flush()
        self.server.close(close_connections=True)  # 1001 going away
        await self.server.wait_closed()  # every handler has written its final row
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.jobs.flush()
        await self.presence.close()
        if self.fanout is not None:
            self.fanout.close()
        await self.writer.close()
        self.engine.dispose()
        log.info("gateway stopped")

    async def process_request(self, ws: ServerConnection, request: Request) -> Response | None:
        """websockets' ``process_request``: ``GET /healthz`` and ``GET /metrics`` are
        answered here, before any upgrade; every other request is an upgrade for
        :class:`Admission`."""
        path = urllib.parse.urlsplit(request.path).path
        if path == HEALTH_PATH:
            return self.health(ws)
        if path == METRICS_PATH:
            return self.metrics_text(ws)
        return await self.admission.authenticate(ws, request)

    def health(self, ws: ServerConnection) -> Response:
        """200 ``{"redis": "ok"}`` while events can be received; 503 with the reason while
        the Redis subscription is down or what it missed is still being replayed."""
        fanin = self.fanin
        body: dict[str, Any]
        if fanin.receiving:
            status, body = 200, {"redis": "ok", "connections": len(self.index.connections)}
        else:
            since = fanin.lost_at
            status, body = (
                503,
                {
                    "redis": "down",
                    "reason": fanin.down_reason or "replaying missed events",
                    "since": None if since is None else dt.datetime.fromtimestamp(since, dt.UTC),
                    "connections": len(self.index.connections),
                },
            )
        body["refused"] = self.refusals.snapshot()
        jwks = self.verifier.jwks if self.verifier is not None else None
        if jwks is not None:
            body["jwks"] = jwks.status()
        response = ws.respond(status, protocol.dumps(body) + "\n")
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = "application/json"
        return response

    def metrics_text(self, ws: ServerConnection) -> Response:
        """200 with the gateway's metrics in Prometheus' text format."""
        response = ws.respond(200, generate_latest(self.metrics.registry).decode())
        del response.headers["Content-Type"]
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    # --- the Hub a Connection reports to ----------------------------------------------

    def cut_off(self, conn: Connection, code: int, reason: str) -> None:
        """Close a connection from the server side (slow consumer, expired token...)."""
        if conn.closing_reason is not None:
            return
        conn.closing_reason = reason
        self.metrics.cut_off(reason)
        log.warning("closing connection %s: %s", conn.connection_id, reason)
        self.writer.update(conn.connection_id, connection_status=ConnectionStatus.DISCONNECTING)
        # Drop what is queued: the point is to stop holding memory for this client.
        while not conn.queue.empty():
            conn.queue.get_nowait()
        if conn.writer_task is not None:
            conn.writer_task.cancel()
        asyncio.get_running_loop().create_task(conn.socket.close_within(code, reason))

    def event_sent(self, conn: Connection, event: EventView, attempt: int) -> None:
        self.metrics.frame_sent(event.arrived, attempt)
        self.outbound.event_sent(conn, event, attempt)
        if self.fanout is not None and attempt == 1:
            self.fanout.written(event.event_id)

    async def _expire_fanout(self) -> None:
        assert self.fanout is not None
        self.fanout.expire()

    def notification_sent(self, conn: Connection, notification_id: str) -> None:
        self.metrics.notifications.inc()
        self.outbound.notification_sent(conn, notification_id)


def check_settings(settings: Settings) -> None:
    """Refuse, naming the variable, settings the gateway cannot run with."""
    s = settings
    asymmetric = s.jwks_url is not None or bool(s.jwt_public_keys)
    if not (s.jwt_secret or asymmetric or s.allow_anonymous):
        raise SettingsError(
            "CLARION_JWT_SECRET",
            "the gateway needs it, CLARION_JWKS_URL or CLARION_JWT_PUBLIC_KEYS "
            "(or CLARION_ALLOW_ANONYMOUS=true)",
        )
    if s.jwt_secret and len(s.jwt_secret.encode()) < 32:
        # RFC 7518 3.2: an HS256 key shorter than the hash is guessable.
        raise SettingsError("CLARION_JWT_SECRET", "must be at least 32 bytes long")
    if asymmetric:
        # A provider signs tokens for every application of the tenant: without iss and
        # aud, a token minted for another application would open the gateway.
        for name, value in (
            ("CLARION_JWT_ISSUER", s.jwt_issuer),
            ("CLARION_JWT_AUDIENCE", s.jwt_audience),
        ):
            if not value:
                raise SettingsError(
                    name, "required with CLARION_JWKS_URL or CLARION_JWT_PUBLIC_KEYS"
                )
    if s.jwks_ca_bundle and not s.jwks_url:
        raise SettingsError("CLARION_JWKS_CA_BUNDLE", "set without CLARION_JWKS_URL")


def with_address(settings: Settings, *, host: str | None, port: int | None) -> Settings:
    """``settings`` with the command line's ``--host`` / ``--port``, which win."""
    changes: dict[str, Any] = {}
    if host is not None:
        changes["gateway_host"] = host
    if port is not None:
        changes["gateway_port"] = port
    return dataclasses.replace(settings, **changes) if changes else settings


def run_gateway(settings: Settings, processes: int = 1) -> None:
    """The entry point of ``clarion gateway``: run until SIGTERM/SIGINT, as one process or as
    ``processes`` processes sharing the port (:mod:`realtime.processes`)."""
    check_settings(settings)  # once, before any process starts: a bad setting exits 3
    if processes > 1:
        from realtime.processes import run_processes

        run_processes(settings, processes)
        return
    asyncio.run(Gateway(settings).run())
