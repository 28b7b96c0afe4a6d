"""Fan-out without task switches, ``clarion gateway --processes N``, and presence in Redis,
against real gateway processes and real clients."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from rtkit import RT, Client, Gateway, gateways_fixture, rt_fixture  # noqa: F401 - fixtures

from clarion import publish_event
from workers.presence import Presence

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def children(gateway: Gateway) -> list[int]:
    """The pids of a ``--processes N`` gateway's processes (the parent's children)."""
    pid = gateway.process.pid
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def fanout_records(path: Path, event_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event_id"] == event_id]


def presence_of(gateway: Gateway) -> Presence:
    s = gateway.settings
    return Presence(redis.Redis.from_url(s.redis_url), s.events_channel)


def test_an_event_to_clients_that_keep_up_is_written_during_the_dispatch(
    gateways: Any, rt: RT, tmp_path: Path
) -> None:
    """Idle subscribers get an event written straight from the dispatch loop (no queue, no
    writer wake-up), in order; the record says so, and the event's row counts every send."""
    log = tmp_path / "fanout.jsonl"
    gw = gateways(processes=1, CLARION_GATEWAY_FANOUT_LOG=str(log))
    rt.use(gw)
    auction = uuid.uuid4()

    async def scenario() -> list[str]:
        clients = [await Client.open(gw.url, RT.token(uuid.uuid4())) for _ in range(30)]
        for c in clients:
            await c.subscribe(auctions=[str(auction)])
        ids = []
        for n in range(5):
            event = await asyncio.to_thread(
                publish_event,
                "bid_placed",
                auction_id=auction,
                visibility="public",
                event_data={"n": n},
            )
            ids.append(str(event.event_id))
            await asyncio.sleep(0.05)
        for c in clients:
            frames = [await c.recv() for _ in range(5)]
            assert [f["data"]["n"] for f in frames] == [0, 1, 2, 3, 4]
            seqs = [f["seq"] for f in frames]
            assert seqs == sorted(seqs)
        for c in clients:
            await c.close()
        return ids

    ids = run(scenario())
    for event_id in ids:
        records = rt.wait_until(lambda e=event_id: fanout_records(log, e), what="fan-out record")
        (record,) = records
        assert record["deliveries"] == 30
        assert record["direct"] == 30 and record["queued"] == 0, record
        assert record["complete"] is True
        assert record["published_at"] <= record["received_at"] <= record["last_write_at"]
        row = rt.wait_until(
            lambda e=event_id: (
                (r := rt.row("real_time_events", "event_id", e))
                and (r["delivery_status"] or {}).get("websocket", {}).get("sent") == 30
                and r
            ),
            what="30 sends counted on the event row",
        )
        assert row["delivery_status"]["websocket"]["sent"] == 30


def test_processes_share_one_port_and_stop_together(gateways: Any, rt: RT, tmp_path: Path) -> None:
    """``--processes 2``: two processes accept on one port, each fans out to its own
    connections, rows are right, a killed process is replaced, SIGTERM stops them all."""
    log = tmp_path / "fanout.jsonl"
    gw = gateways(processes=2, CLARION_GATEWAY_FANOUT_LOG=str(log))
    rt.use(gw)
    first = children(gw)
    assert len(first) == 2
    auction = uuid.uuid4()

    async def scenario() -> None:
        clients = [await Client.open(gw.url, RT.token(uuid.uuid4())) for _ in range(40)]
        for c in clients:
            await c.subscribe(auctions=[str(auction)])
        event = await asyncio.to_thread(
            publish_event, "bid_placed", auction_id=auction, visibility="public", event_data={}
        )
        event_id = str(event.event_id)
        for c in clients:
            assert (await c.recv())["event_id"] == event_id
        await asyncio.to_thread(check, [c.connection_id for c in clients], event_id)
        for c in clients:
            await c.ws.close()

    def check(ids: list[str], event_id: str) -> None:
        records = rt.wait_until(
            lambda: len(r := fanout_records(log, event_id)) == 2 and r,
            what="a record per process",
        )
        assert {r["pid"] for r in records} == set(first)
        assert all(r["deliveries"] > 0 for r in records), "the kernel spread the connections"
        assert sum(r["deliveries"] for r in records) == 40
        rt.wait_until(
            lambda: (
                len(
                    rt.rows(
                        "SELECT 1 FROM websocket_connections WHERE connection_id::text = ANY(:ids)"
                        " AND connection_status = 'connected' AND messages_sent >= 3",
                        ids=ids,
                    )
                )
                == 40
            ),
            what="40 rows connected, welcome + subscribed + event counted",
        )
        rt.wait_until(
            lambda: (
                (r := rt.row("real_time_events", "event_id", event_id))
                and (r["delivery_status"] or {}).get("websocket", {}).get("sent") == 40
            ),
            what="sends of both processes summed on the event row",
        )

        # A process killed without a word is replaced; the port keeps serving.
        os.kill(first[0], signal.SIGKILL)
        rt.wait_until(
            lambda: len(now := children(gw)) == 2 and first[0] not in now, 15, "a new process"
        )
        assert "exited -9; starting another" in gw.log()
        for _ in range(4):
            run(still_serving())

        # SIGTERM to the parent: every process closes its connections (1001) and exits.
        current = children(gw)
        assert gw.stop() == 0
        assert not [p for p in current if Path(f"/proc/{p}").exists()], "a process outlived it"
        on_survivor = next(r["deliveries"] for r in records if r["pid"] != first[0])
        rows = rt.rows(
            "SELECT connection_status, disconnect_reason FROM websocket_connections"
            " WHERE connection_id::text = ANY(:ids)",
            ids=ids,
        )
        closed = [r for r in rows if r["disconnect_reason"] == "gateway shutdown"]
        assert len(closed) == on_survivor, rows
        assert all(r["connection_status"] == "disconnected" for r in closed)
        # The killed process's rows stay open until the sweep (no heartbeat for 3 intervals).
        left = [r for r in rows if r["disconnect_reason"] != "gateway shutdown"]
        assert len(left) == 40 - on_survivor
        assert all(r["connection_status"] == "connected" for r in left), left

    async def still_serving() -> None:
        client = await Client.open(gw.url, RT.token(uuid.uuid4()))
        await client.close()

    run(scenario())


def test_presence_follows_subscriptions_disconnects_and_a_killed_gateway(
    gateways: Any, rt: RT
) -> None:
    gw = gateways(processes=1, CLARION_PRESENCE_TTL="2")
    presence = presence_of(gw)
    user, other, auction, elsewhere = (uuid.uuid4() for _ in range(4))

    def soon(expected: bool, *args: Any, within: float = 2.0) -> None:
        rt.wait_until(
            lambda: presence.is_present(*args) is expected,
            within,
            f"is_present{args} to be {expected}",
        )

    async def scenario() -> None:
        assert not presence.is_present(user)
        client = await Client.open(gw.url, RT.token(user))
        await asyncio.to_thread(soon, True, user)
        assert not presence.is_present(user, auction)
        await client.subscribe(auctions=[str(auction)])
        await asyncio.to_thread(soon, True, user, auction)
        assert not presence.is_present(user, elsewhere)
        assert not presence.is_present(other, auction)
        # A second connection of the same user keeps the auction after the first leaves it.
        second = await Client.open(gw.url, RT.token(user))
        await second.subscribe(auctions=[str(auction), str(elsewhere)])
        await asyncio.to_thread(soon, True, user, elsewhere)
        await client.send({"type": "unsubscribe", "auctions": [str(auction)]})
        await client.recv_until("unsubscribed")
        await asyncio.sleep(0.3)
        assert presence.is_present(user, auction)
        await second.close()
        await asyncio.to_thread(soon, False, user, auction)
        await asyncio.to_thread(soon, False, user, elsewhere)
        assert presence.is_present(user)  # the first connection is still open
        await client.close()
        await asyncio.to_thread(soon, False, user)

        # A gateway killed with -9 says nothing: its entries die with its heartbeat key.
        third = await Client.open(gw.url, RT.token(other))
        await third.subscribe(auctions=[str(auction)])
        await asyncio.to_thread(soon, True, other, auction)
        gw.process.kill()
        gw.process.wait()
        killed = time.monotonic()
        await asyncio.to_thread(soon, False, other, auction, within=4.0)
        assert time.monotonic() - killed <= 2.0 + 1.0  # the TTL, and one polling round
        assert not presence.is_present(other)

    run(scenario())


def test_presence_of_a_graceful_shutdown_and_of_one_of_several_processes(
    gateways: Any, rt: RT
) -> None:
    gw = gateways(processes=2, CLARION_PRESENCE_TTL="2")
    presence = presence_of(gw)
    auction = uuid.uuid4()
    users = [uuid.uuid4() for _ in range(16)]

    def check() -> None:
        rt.wait_until(
            lambda: all(presence.is_present(u, auction) for u in users), what="all present"
        )
        # Kill one of the two processes: exactly its users go absent within the TTL.
        os.kill(children(gw)[0], signal.SIGKILL)
        rt.wait_until(
            lambda: 0 < sum(presence.is_present(u, auction) for u in users) < len(users),
            4,
            "the killed process's users absent, the others present",
        )
        time.sleep(1.0)
        kept = [u for u in users if presence.is_present(u, auction)]
        assert 0 < len(kept) < len(users)
        # SIGTERM: every process removes its entries as it stops.
        assert gw.stop() == 0
        assert not any(presence.is_present(u) for u in kept)

    async def scenario() -> None:
        clients = []
        for user in users:
            client = await Client.open(gw.url, RT.token(user))
            await client.subscribe(auctions=[str(auction)])
            clients.append(client)
        await asyncio.to_thread(check)
        for c in clients:
            await c.ws.close()

    run(scenario())


def test_presence_refuses_ids_that_are_not_uuids(gateways: Any) -> None:
    gw = gateways(processes=1)
    presence = presence_of(gw)
    with pytest.raises(ValueError, match="user_id must be a UUID"):
        presence.is_present("bob")
    with pytest.raises(ValueError, match="auction_id must be a UUID"):
        presence.is_present(uuid.uuid4(), "lot 7")
