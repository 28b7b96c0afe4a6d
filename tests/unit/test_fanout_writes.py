"""A connection's direct writes and its queue, over a real socket: a frame never overtakes
one queued before it, a direct write awaits its ack like a queued one, and the queue's bound
cuts a client off.

A real ``websockets`` server (the gateway's own :class:`realtime.connection.Socket`) and a
real client on loopback, in one event loop, so that the test decides exactly when a frame
is offered: right when the socket lets writes through again while older frames still wait
in the queue, which is where a direct write would overtake them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from realtime.connection import SLOW_CONSUMER, Connection, Socket
from realtime.visibility import EventView, Viewer

BLOB = "x" * 40_000  # more than websockets' write limit (32 KiB): one frame pauses writing


class Recorder:
    """The :class:`realtime.connection.Hub` of these tests: it records what it is told."""

    def __init__(self) -> None:
        self.cut: list[tuple[int, str]] = []
        self.sent: list[tuple[str, int]] = []

    def cut_off(self, conn: Connection, code: int, reason: str) -> None:
        self.cut.append((code, reason))
        conn.closing_reason = reason

    def event_sent(self, conn: Connection, event: EventView, attempt: int) -> None:
        self.sent.append((event.event_id, attempt))

    def notification_sent(self, conn: Connection, notification_id: str) -> None:
        raise AssertionError("no notification in these tests")


def event(n: int, *, ack: bool = False) -> EventView:
    return EventView.from_payload(
        {
            "event_id": str(uuid.uuid4()),
            "seq": n,
            "event_type": "bid_placed",
            "category": "bid",
            "priority": "normal",
            "visibility": "public",
            "auction_id": "a",
            "ack_required": ack,
            "data": {"n": n, "blob": BLOB},
        }
    )


def deliver(conn: Connection, view: EventView) -> bool:
    data = view.frame.encode()
    return conn.deliver(view, data, len(data))


async def with_connection(queue_size: int, body: Any) -> Any:
    """Run ``body(conn, hub, client)`` with a gateway connection and the client at its other
    end (which reads nothing until told: websockets stops reading after ``max_queue``)."""
    hub = Recorder()
    opened: asyncio.Future[Connection] = asyncio.get_running_loop().create_future()

    async def handler(socket: Any) -> None:
        conn = Connection(
            hub,
            socket,
            Viewer(user_id=str(uuid.uuid4()), authenticated=True),
            session_id="s",
            token_expires_at=None,
            queue_size=queue_size,
        )
        conn.writer_task = asyncio.create_task(conn.write_loop())
        opened.set_result(conn)
        await socket.wait_closed()
        conn.writer_task.cancel()

    async with serve(
        handler, "127.0.0.1", 0, create_connection=Socket, compression=None, ping_interval=None
    ) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(
            f"ws://127.0.0.1:{port}/",
            compression=None,
            ping_interval=None,
            max_queue=2,
            close_timeout=1,
        ) as client:
            conn = await opened
            return await body(conn, hub, client)


async def fill(conn: Connection) -> int:
    """Deliver events until one is queued (the client reads nothing); return how many."""
    n = 0
    while deliver(conn, event(n)):
        n += 1
        await asyncio.sleep(0)  # let the transport try to send
        assert n < 10_000, "the socket never pushed back"
    return n + 1


async def read(client: Any, count: int) -> list[int]:
    return [json.loads(await client.recv())["data"]["n"] for _ in range(count)]


def test_a_frame_offered_while_older_ones_wait_in_the_queue_goes_behind_them() -> None:
    async def body(conn: Connection, hub: Recorder, client: Any) -> None:
        n = await fill(conn)
        for _ in range(20):  # more queued behind the first
            assert not deliver(conn, event(n))
            n += 1
        reader = asyncio.create_task(read(client, n + 40))
        # Each time the socket takes writes again, offer a frame at once: older frames
        # still wait in the queue (or are in flight), so it must queue behind them.
        offered = 0
        while offered < 40:
            await asyncio.sleep(0)
            if conn.socket.paused:
                continue
            written = deliver(conn, event(n))
            n += 1
            offered += 1
            if conn.queue.qsize() > 1 or conn.send_started:
                assert not written, "written directly while older frames were queued"
        assert await asyncio.wait_for(reader, 30) == list(range(n))
        assert not hub.cut

    asyncio.run(with_connection(1000, body))


def test_a_direct_write_awaits_its_ack_and_is_counted_by_the_caller() -> None:
    async def body(conn: Connection, hub: Recorder, client: Any) -> None:
        view = event(0, ack=True)
        assert deliver(conn, view)  # nothing waits before it: written at once
        assert conn.take_ack(view.event_id) == 1
        assert hub.sent == []  # direct sends are counted once per event by the dispatch
        assert await read(client, 1) == [0]

    asyncio.run(with_connection(1000, body))


def test_a_queued_frame_is_reported_sent_once_written() -> None:
    """The gateway's hub counts it and awaits its ack from that report."""

    async def body(conn: Connection, hub: Recorder, client: Any) -> None:
        n = await fill(conn)
        view = event(n, ack=True)
        assert not deliver(conn, view)
        assert await asyncio.wait_for(read(client, n + 1), 30) == list(range(n + 1))
        for _ in range(100):
            if (view.event_id, 1) in hub.sent:
                break
            await asyncio.sleep(0.01)
        assert (view.event_id, 1) in hub.sent

    asyncio.run(with_connection(1000, body))


def test_a_client_whose_queue_is_full_is_cut_off_and_no_frame_is_written_past_the_bound() -> None:
    async def body(conn: Connection, hub: Recorder, client: Any) -> None:
        await fill(conn)
        for n in range(10):
            deliver(conn, event(1000 + n))
        assert hub.cut == [(1008, SLOW_CONSUMER)]
        assert conn.queue.qsize() <= 5
        assert not deliver(conn, event(2000))  # closing: nothing more goes out

    asyncio.run(with_connection(5, body))
