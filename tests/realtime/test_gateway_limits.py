"""What one client may take of a real gateway process: connections per user and per IP
(with their close codes), X-Forwarded-For believed only from trusted proxies, the
origins allow-list, the subscribe rate and the subscriptions per connection; and
``clarion gateway --host/--port``."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from typing import Any

import pytest
from harness import CLARION, ROOT
from rtkit import RT, Client, Gateway, free_port, gateways_fixture, rt_fixture  # noqa: F401
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def closed_at_once(gateway: Gateway, token: str, **headers: str) -> tuple[int, str]:
    """(close code, reason) of a connection the gateway opens and closes without a welcome."""
    async with connect(
        f"{gateway.url}?token={token}", additional_headers=headers, open_timeout=10
    ) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def alive(client: Client) -> bool:
    try:
        await client.send({"type": "ping"})
        return (await client.recv(timeout=5))["type"] == "pong"
    except ConnectionClosed:
        return False


def test_connections_per_user_newest_refused_with_4008(gateways: Any, rt: RT) -> None:
    gateway = gateways(CLARION_GATEWAY_MAX_CONNECTIONS_PER_USER="2")
    user, other = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        first = [await Client.open(gateway.url, RT.token(user)) for _ in range(2)]
        code = await closed_at_once(gateway, RT.token(user))
        assert code == (4008, "too many connections for this user")
        someone_else = await Client.open(gateway.url, RT.token(other))  # others are not held up
        assert all([await alive(c) for c in first])
        await first[0].close()
        rt.wait_until(lambda: gateway.health()["connections"] == 2, what="slot freed")
        again = await Client.open(gateway.url, RT.token(user))  # a freed slot is taken again
        assert await alive(again)
        for c in (first[1], someone_else, again):
            await c.close()

    run(scenario())
    assert gateway.health()["refused"]["user_limit"] == 1
    rows = rt.rows("SELECT 1 FROM websocket_connections WHERE user_id = :u", u=user)
    assert len(rows) == 3  # the refused connection left no row


def test_connections_per_user_oldest_closed_with_4010(gateways: Any, rt: RT) -> None:
    gateway = gateways(
        CLARION_GATEWAY_MAX_CONNECTIONS_PER_USER="2", CLARION_GATEWAY_LIMIT_POLICY="close_oldest"
    )
    user = uuid.uuid4()

    async def scenario() -> str:
        oldest, middle = [await Client.open(gateway.url, RT.token(user)) for _ in range(2)]
        newest = await Client.open(gateway.url, RT.token(user))
        with pytest.raises(ConnectionClosed) as closed:
            await oldest.recv(timeout=10)
        assert closed.value.rcvd is not None
        assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
            4010,
            "replaced by a newer connection (user)",
        )
        assert await alive(middle) and await alive(newest)
        await middle.close()
        await newest.close()
        return oldest.connection_id

    oldest_id = run(scenario())
    row = rt.wait_until(
        lambda: (
            (r := rt.row("websocket_connections", "connection_id", oldest_id))
            and r["connection_status"] == "disconnected"
            and r
        ),
        what="the oldest's final row",
    )
    assert row["disconnect_reason"] == "replaced by a newer connection (user)"


def test_connections_per_ip_and_forged_forwarded_for(gateways: Any, rt: RT) -> None:
    # No trusted proxy: X-Forwarded-For is whatever the client likes, so it is ignored.
    direct = gateways(CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP="2")
    # Behind a trusted proxy (the test plays it, from 127.0.0.1): the header is believed.
    proxied = gateways(
        CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP="1",
        CLARION_GATEWAY_TRUSTED_PROXIES="10.0.0.0/8, 127.0.0.1",
    )

    async def scenario() -> None:
        held = [
            await Client.open(
                direct.url, RT.token(uuid.uuid4()), headers={"X-Forwarded-For": forged}
            )
            for forged in ("203.0.113.5", "203.0.113.6")
        ]
        code = await closed_at_once(
            direct, RT.token(uuid.uuid4()), **{"X-Forwarded-For": "198.51.100.9"}
        )
        assert code == (4009, "too many connections for this address")
        a = await Client.open(
            proxied.url, RT.token(uuid.uuid4()), headers={"X-Forwarded-For": "203.0.113.5"}
        )
        # What a client put in front of the proxy's own entry does not count: the
        # rightmost address not of a trusted proxy is the client.
        b = await Client.open(
            proxied.url,
            RT.token(uuid.uuid4()),
            headers={"X-Forwarded-For": "203.0.113.5, 203.0.113.7, 10.1.2.3"},
        )
        code = await closed_at_once(
            proxied, RT.token(uuid.uuid4()), **{"X-Forwarded-For": "1.2.3.4, 203.0.113.5"}
        )
        assert code == (4009, "too many connections for this address")
        clients = [*held, a, b]
        ips = []
        for client in clients:
            row = await asyncio.to_thread(
                rt.wait_until,
                lambda c=client: rt.row("websocket_connections", "connection_id", c.connection_id),
                10,
                "row",
            )
            ips.append(str(row["client_ip"]))
        assert ips == ["127.0.0.1", "127.0.0.1", "203.0.113.5", "203.0.113.7"]
        for client in clients:
            await client.close()

    run(scenario())
    assert direct.health()["refused"]["ip_limit"] == 1
    assert proxied.health()["refused"]["ip_limit"] == 1


def test_origins_allow_list(gateways: Any, rt: RT) -> None:
    allowed = "https://auctions.example.com"
    gateway = gateways(CLARION_GATEWAY_ALLOWED_ORIGINS=f"{allowed}, https://m.example.com:8443")
    strict = gateways(
        CLARION_GATEWAY_ALLOWED_ORIGINS=allowed, CLARION_GATEWAY_ALLOW_NO_ORIGIN="false"
    )
    user = uuid.uuid4()

    async def refused(gw: Gateway, origin: str | None) -> tuple[int, str]:
        with pytest.raises(InvalidStatus) as caught:
            await Client.open(gw.url, RT.token(user), origin=origin)
        response = caught.value.response
        return int(response.status_code), response.body.decode().strip()

    async def scenario() -> None:
        for origin in ("https://evil.example", "http://auctions.example.com", "null"):
            assert await refused(gateway, origin) == (403, "origin not allowed"), origin
        for origin in (allowed, "https://M.example.com:8443", None):
            client = await Client.open(gateway.url, RT.token(user), origin=origin)
            assert await alive(client)
            await client.close()
        assert await refused(strict, None) == (403, "an Origin header is required")
        client = await Client.open(strict.url, RT.token(user), origin=allowed)
        await client.close()

    run(scenario())
    assert gateway.health()["refused"]["origin"] == 3
    assert strict.health()["refused"]["origin"] == 1
    rows = rt.rows("SELECT device_info FROM websocket_connections WHERE user_id = :u", u=user)
    assert len(rows) == 4  # refused before the upgrade: no row
    assert sorted((r["device_info"] or {}).get("origin", "-") for r in rows) == [
        "-",
        "https://M.example.com:8443",
        allowed,
        allowed,
    ]


def test_subscribe_rate_and_subscriptions_per_connection(gateways: Any, rt: RT) -> None:
    gateway = gateways(CLARION_GATEWAY_SUBSCRIBE_RATE="2", CLARION_GATEWAY_MAX_SUBSCRIPTIONS="3")

    async def scenario() -> None:
        client = await Client.open(gateway.url, RT.token(uuid.uuid4()))
        for n in range(5):
            await client.send({"type": "subscribe", "topics": [f"t{n}"]})
        answers = [await client.recv() for _ in range(5)]
        assert [a["type"] for a in answers[:2]] == ["subscribed", "subscribed"]
        assert [a.get("error") for a in answers[2:]] == ["rate_limited"] * 3
        assert answers[1]["topics"] == ["t0", "t1"]
        await asyncio.sleep(1.1)  # the bucket fills again
        await client.send({"type": "subscribe", "topics": ["t2", "t3"]})
        too_many = await client.recv()
        assert too_many["error"] == "too_many_subscriptions"
        assert too_many["detail"] == "at most 3 per connection"
        frames = await client.subscribe(topics=["t2"], auctions=[])
        assert frames[-1]["topics"] == ["t0", "t1", "t2"]
        await client.close()

    run(scenario())
    refused = gateway.health()["refused"]
    assert (refused["subscribe_rate"], refused["subscriptions"]) == (3, 1)


def test_gateway_host_and_port_flags(gateways: Any) -> None:
    port = free_port()
    gateway = gateways("--host", "127.0.0.1", "--port", str(port))
    assert gateway.port == port and gateway.env["CLARION_GATEWAY_PORT"] != str(port)
    assert f"listening on 127.0.0.1:{port}" in gateway.log()

    async def scenario() -> None:
        client = await Client.open(f"ws://127.0.0.1:{port}/", RT.token(uuid.uuid4()))
        assert await alive(client)
        await client.close()

    run(scenario())
    for bad in ("0", "70000", "http"):
        done = subprocess.run(
            [CLARION, "gateway", "--port", bad], cwd=ROOT, capture_output=True, text=True
        )
        assert done.returncode == 2 and "a port is an integer from 1 to 65535" in done.stderr
