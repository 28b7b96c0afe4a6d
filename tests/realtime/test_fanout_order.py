"""The fan-out's direct writes and its queues together: a client that falls behind gets
its frames queued, later ones queue behind them, nothing overtakes, every ack counts.

Against a real gateway (single- or multi-process, ``CLARION_TEST_GATEWAY_PROCESSES``)
and real clients: one keeps up (its frames are written during the dispatch), one stops
reading while a first burst goes out (its socket fills, its frames queue) and starts
again while a second burst is published (its queue drains while new events arrive).
"""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rtkit import RT, Client, gateways_fixture, rt_fixture  # noqa: F401 - fixtures

from clarion import publish_event

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

#: Events per burst and their size: the first burst is far more than the socket buffers of
#: a client that stopped reading hold (websockets stops reading after 16 frames).
BURST = 400
BLOB = "x" * 32_000
NO_HEARTBEAT = {"CLARION_GATEWAY_HEARTBEAT": "600", "CLARION_GATEWAY_HEARTBEAT_TIMEOUT": "600"}


def publish(auction: str, first: int, count: int) -> list[str]:
    ids = []
    for n in range(first, first + count):
        row = publish_event(
            "bid_placed",
            auction_id=auction,
            visibility="public",
            event_data={"n": n, "blob": BLOB},
            ack_required=True,
            ack_timeout=600,  # no redelivery within the test: every frame is a first send
        )
        ids.append(str(row.event_id))
    return ids


async def read_all(client: Client, count: int, pause: float = 0.0) -> list[int]:
    """Read ``count`` event frames, acknowledging each (``pause`` seconds after each: a client
    that just keeps up, its socket pausing and resuming the gateway's writes again and
    again); return their ``n`` in arrival order."""
    got = []
    while len(got) < count:
        frame = await client.recv(timeout=60)
        if frame["type"] != "event":
            continue
        assert frame.get("attempt", 1) == 1, frame  # a redelivery carries its attempt
        got.append(frame["data"]["n"])
        await client.send({"type": "ack", "event_id": frame["event_id"]})
        if pause:
            await asyncio.sleep(pause)
    return got


def test_queued_frames_keep_their_order_behind_direct_ones_and_every_ack_counts(
    gateways: Any, rt: RT, tmp_path: Path
) -> None:
    log = tmp_path / "fanout.jsonl"
    gateway = gateways(
        CLARION_GATEWAY_FANOUT_LOG=str(log),
        CLARION_GATEWAY_OUTBOUND_QUEUE="5000",
        CLARION_GATEWAY_SEND_TIMEOUT="600",
        **NO_HEARTBEAT,
    )
    rt.use(gateway)
    auction = str(uuid.uuid4())

    async def scenario() -> tuple[list[int], list[int], list[str], str]:
        fast = await Client.open(gateway.url, RT.token(uuid.uuid4()))
        slow = await Client.open(gateway.url, RT.token(uuid.uuid4()))
        await fast.subscribe(auctions=[auction])
        await slow.subscribe(auctions=[auction])
        fast_reading = asyncio.create_task(read_all(fast, 2 * BURST))
        # Burst 1: the slow client reads nothing, so its frames end up queued.
        ids = await asyncio.to_thread(publish, auction, 0, BURST)
        await asyncio.sleep(1.0)  # the gateway has dispatched all of it
        # Burst 2 while the slow client drains its queue: new events arrive while older
        # frames still wait, and must not overtake them.
        second = threading.Thread(target=lambda: ids.extend(publish(auction, BURST, BURST)))
        second.start()
        slow_order = await read_all(slow, 2 * BURST, pause=0.005)
        await asyncio.to_thread(second.join)
        fast_order = await fast_reading
        await fast.close()
        await slow.close()
        return fast_order, slow_order, ids, slow.welcome["connection_id"]

    fast_order, slow_order, ids, _slow_id = asyncio.run(scenario())
    assert fast_order == list(range(2 * BURST))
    assert slow_order == list(range(2 * BURST)), "a frame overtook one queued before it"
    records = [r for r in map(json.loads, log.read_text().splitlines()) if r["event_id"] in ids]
    assert sum(r["queued"] for r in records) > 0 and sum(r["direct"] for r in records) > 0
    # Every first send was counted once and every ack recorded, direct or queued.
    rows = rt.wait_until(
        lambda: (
            (found := event_stats(rt, ids))
            and all(s.get("sent") == 2 and s.get("acked") == 2 for s in found)
            and found
        ),
        30,
        "2 sends and 2 acks on every event row",
    )
    assert len(rows) == 2 * BURST


def event_stats(rt: RT, ids: list[str]) -> list[dict[str, Any]]:
    with rt.engine.connect() as c:
        rows = c.execute(
            sa.text("SELECT delivery_status FROM real_time_events WHERE event_id = ANY(:ids)"),
            {"ids": [uuid.UUID(i) for i in ids]},
        ).all()
    return [(r[0] or {}).get("websocket", {}) for r in rows]
