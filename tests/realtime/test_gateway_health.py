"""Gateway health with processes of their own: sweep of crashed rows, graceful shutdown,
missed heartbeats, slow consumers."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
from rtkit import RT, Client, gateways_fixture, rt_fixture  # noqa: F401 - fixtures
from websockets.exceptions import ConnectionClosed

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def test_sweep_at_start_up_and_graceful_shutdown(gateways: Any, rt: RT) -> None:
    lost, alive_elsewhere = uuid.uuid4(), uuid.uuid4()
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    for connection_id, beat in ((lost, old), (alive_elsewhere, dt.datetime.now(dt.UTC))):
        rt.execute(
            "INSERT INTO websocket_connections (connection_id, user_id, session_id, socket_id, "
            "connection_status, client_ip, user_agent, connected_at, last_heartbeat, "
            "subscriptions, auction_subscriptions) VALUES (:c, :u, 's', 'x', 'connected', "
            "'127.0.0.1', 'ua', :t, :t, '[]', '[]')",
            c=connection_id,
            u=uuid.uuid4(),
            t=beat,
        )
    gateway = gateways()
    swept = rt.row("websocket_connections", "connection_id", lost)
    assert swept is not None and swept["connection_status"] == "disconnected"
    assert "swept" in swept["disconnect_reason"]
    other = rt.row("websocket_connections", "connection_id", alive_elsewhere)
    assert other is not None and other["connection_status"] == "connected"

    async def scenario() -> list[str]:
        clients = [await Client.open(gateway.url, RT.token(uuid.uuid4())) for _ in range(3)]
        gateway.process.send_signal(15)
        for client in clients:
            with pytest.raises(ConnectionClosed) as closed:
                await client.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
        return [c.connection_id for c in clients]

    ids = asyncio.run(scenario())
    assert gateway.process.wait(15) == 0
    for connection_id in ids:
        row = rt.row("websocket_connections", "connection_id", connection_id)
        assert row is not None and row["connection_status"] == "disconnected"
        assert row["disconnect_reason"] == "gateway shutdown"
        assert row["messages_sent"] == 1  # the welcome


def test_a_client_that_misses_heartbeats_is_disconnected(gateways: Any, rt: RT) -> None:
    gateway = gateways(CLARION_GATEWAY_HEARTBEAT="0.5", CLARION_GATEWAY_HEARTBEAT_TIMEOUT="0.5")
    # A raw client: completes the handshake, then never reads (so never answers a ping).
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.sendall(
        (
            f"GET /?token={RT.token(uuid.uuid4())} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = sock.recv(4096)
    assert b"101" in head.split(b"\r\n")[0]
    try:
        row = rt.wait_until(
            lambda: [
                r
                for r in rt.rows(
                    "SELECT * FROM websocket_connections WHERE connection_status = 'disconnected' "
                    "AND disconnect_reason LIKE 'missed heartbeats%' AND connected_at > :t",
                    t=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30),
                )
            ],
            timeout=10,
            what="heartbeat disconnect",
        )
        assert row
    finally:
        sock.close()


def flood(gateway: Any, auction: str, frames: int, until: Callable[[], Any] = lambda: False) -> int:
    """Publish up to ``frames`` events of 16 kB for ``auction``, stopping early once
    ``until()`` holds; return how many were published.

    Paced by Redis's own output buffers: Redis drops a subscriber whose buffer
    passes 32 MB (``client-output-buffer-limit pubsub``), and a gateway dropped
    that way would miss part of the flood, so each batch waits until the
    subscribers have read the previous one.
    """
    blob = "x" * 16_000
    publisher = redis.Redis.from_url(gateway.settings.redis_url)
    channel = gateway.settings.events_channel
    published = 0
    try:
        while published < frames and not until():
            pipe = publisher.pipeline(transaction=False)
            for n in range(published, min(published + 50, frames)):
                pipe.publish(
                    channel,
                    json.dumps(
                        {
                            "event_id": str(uuid.uuid4()),
                            "seq": n,
                            "event_type": "flood",
                            "category": "auction",
                            "priority": "low",
                            "visibility": "public",
                            "auction_id": auction,
                            "data": {"blob": blob},
                        }
                    ),
                )
            receivers = pipe.execute()
            assert all(r == gateway.processes for r in receivers), (
                "the gateway stopped listening to Redis"
            )
            published += len(receivers)
            RT.wait_until(
                lambda: all(
                    int(c.get("omem", 0)) < 1_000_000 for c in publisher.client_list("pubsub")
                ),
                10,
                "the gateway to read its Redis subscription",
            )
    finally:
        publisher.close()
    return published


def disconnected(rt: RT, connection_id: str) -> dict[str, Any] | None:
    row = rt.row("websocket_connections", "connection_id", connection_id)
    return row if row is not None and row["connection_status"] == "disconnected" else None


# Heartbeats far beyond each test's wait: only the slow-consumer rules can close the
# connection, so the test never races the keepalive timeout against them.
NO_HEARTBEAT = {"CLARION_GATEWAY_HEARTBEAT": "600", "CLARION_GATEWAY_HEARTBEAT_TIMEOUT": "600"}


def test_a_slow_consumer_is_cut_off_when_its_queue_is_full(gateways: Any, rt: RT) -> None:
    gateway = gateways(
        CLARION_GATEWAY_OUTBOUND_QUEUE="20", CLARION_GATEWAY_SEND_TIMEOUT="600", **NO_HEARTBEAT
    )
    auction = str(uuid.uuid4())

    async def scenario() -> dict[str, Any]:
        # Not draining it: the client library stops reading after 16 frames.
        client = await Client.open(gateway.url, RT.token(uuid.uuid4()))
        await client.subscribe(auctions=[auction])
        try:  # the client never reads again
            await asyncio.to_thread(
                flood, gateway, auction, 4000, lambda: disconnected(rt, client.connection_id)
            )
            return await asyncio.to_thread(
                rt.wait_until,
                lambda: disconnected(rt, client.connection_id),
                20,
                "slow consumer cut off",
            )
        finally:
            client.ws.transport.abort()
            await asyncio.sleep(0.05)

    row = asyncio.run(scenario())
    assert row["disconnect_reason"] == "slow consumer"
    assert "slow consumer" in gateway.log()


def test_a_client_that_stops_reading_is_cut_off_with_its_queue_far_from_full(
    gateways: Any, rt: RT
) -> None:
    # The writer waits in a send that never completes and no more events come to
    # fill the queue; the keepalive ping waits behind the same socket buffers.
    gateway = gateways(
        CLARION_GATEWAY_OUTBOUND_QUEUE="100000", CLARION_GATEWAY_SEND_TIMEOUT="1", **NO_HEARTBEAT
    )
    auction = str(uuid.uuid4())

    async def scenario() -> dict[str, Any]:
        client = await Client.open(gateway.url, RT.token(uuid.uuid4()))
        await client.subscribe(auctions=[auction])
        try:
            # 48 MB: more than the socket buffers on both sides can hold.
            await asyncio.to_thread(flood, gateway, auction, 3000)
            return await asyncio.to_thread(
                rt.wait_until,
                lambda: disconnected(rt, client.connection_id),
                20,
                "stalled client cut off",
            )
        finally:
            client.ws.transport.abort()
            await asyncio.sleep(0.05)

    row = asyncio.run(scenario())
    assert row["disconnect_reason"] == "slow consumer"
