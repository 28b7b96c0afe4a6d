"""The gateway against real clients: tokens, lifecycle and counters, visibility, resume, acks,
in-app notifications. One gateway process shared by the module (``gw``)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis
from rtkit import REDIS_URL, RT, Client, Gateway, gateways_fixture, gw_fixture, rt_fixture  # noqa: F401 - fixtures
from websockets.exceptions import InvalidStatus

from clarion import publish_event
from clarion.api import notify
from models.enums import Visibility

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in frames if f["type"] == "event"]


def test_missing_forged_and_expired_tokens_are_refused(gw: Gateway, rt: RT) -> None:
    user = uuid.uuid4()
    forged = RT.token(user)[:-4] + "AAAA"
    from realtime.auth import make_token

    other_key = make_token(user, "not-the-gateway-secret-but-just-as-long")
    expired = RT.token(user, ttl=-10)

    async def attempt(token: str | None) -> int:
        with pytest.raises(InvalidStatus) as refused:
            await Client.open(gw.url, token)
        return int(refused.value.response.status_code)

    async def scenario() -> list[int]:
        return [await attempt(t) for t in (None, forged, other_key, expired, "garbage")]

    assert run(scenario()) == [401, 401, 401, 401, 401]
    assert rt.rows("SELECT 1 FROM websocket_connections WHERE user_id = :u", u=user) == []


def test_connection_row_lifecycle_and_counters(gw: Gateway, rt: RT) -> None:
    rt.use(gw)
    user, auction = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> Client:
        client = await Client.open(gw.url, RT.token(user), session="s-1")
        row = rt.wait_until(
            lambda: (
                (r := rt.row("websocket_connections", "connection_id", client.connection_id))
                and r["connection_status"] == "connected"
                and r
            ),
            what="connected row",
        )
        assert row["user_id"] == user and row["session_id"] == "s-1"
        assert str(row["client_ip"]) == "127.0.0.1" and "websockets" in row["user_agent"]
        await client.subscribe(auctions=[str(auction)], topics=["bid"])
        await asyncio.to_thread(
            publish_event,
            "bid_placed",
            auction_id=auction,
            event_data={"bid_amount": 150.0},
            visibility="authenticated",
        )
        frame = await client.recv()
        assert frame["type"] == "event" and frame["event_type"] == "bid_placed"
        await client.send({"type": "ping"})
        assert (await client.recv())["type"] == "pong"
        await client.send({"type": "nonsense"})
        assert (await client.recv())["error"] == "unknown_type"
        # counters reach the row by the periodic flush, while connected
        rt.wait_until(
            lambda: (
                (r := rt.row("websocket_connections", "connection_id", client.connection_id))
                and r["messages_received"] == client.sent_msgs
                and r["messages_sent"] == client.recv_msgs
            ),
            what="flushed counters",
        )
        live = rt.row("websocket_connections", "connection_id", client.connection_id)
        assert live is not None
        assert live["subscriptions"] == ["bid"] and live["auction_subscriptions"] == [str(auction)]
        assert live["bytes_received"] == client.sent_bytes
        assert live["bytes_sent"] == client.recv_bytes
        assert live["error_count"] == 1 and "unknown_type" in live["last_error"]
        await client.close()
        return client

    client = run(scenario())
    row = rt.wait_until(
        lambda: (
            (r := rt.row("websocket_connections", "connection_id", client.connection_id))
            and r["connection_status"] == "disconnected"
            and r
        ),
        what="disconnected row",
    )
    assert row["disconnect_reason"] == "client closed (1000)"
    assert row["disconnected_at"] is not None and row["connected_at"] <= row["disconnected_at"]
    assert (row["messages_sent"], row["bytes_sent"]) == (client.recv_msgs, client.recv_bytes)
    assert (row["messages_received"], row["bytes_received"]) == (
        client.sent_msgs,
        client.sent_bytes,
    )
    assert row["reconnect_count"] == 0 and row["compression_enabled"] is False

    async def again() -> None:
        second = await Client.open(gw.url, RT.token(user), session="s-1")
        rt.wait_until(
            lambda: rt.row("websocket_connections", "connection_id", second.connection_id),
            what="second row",
        )
        await second.close()

    run(again())
    counts = rt.rows(
        "SELECT reconnect_count FROM websocket_connections WHERE user_id = :u ORDER BY created_at",
        u=user,
    )
    assert [c["reconnect_count"] for c in counts] == [0, 1]


def test_visibility_with_many_users(gateways: Any, rt: RT) -> None:
    gateway = gateways(CLARION_ALLOW_ANONYMOUS="true")
    rt.use(gateway)
    auction = uuid.uuid4()
    users = [uuid.uuid4() for _ in range(20)]
    targeted = set(users[3:9])
    stranger = uuid.uuid4()  # not connected: its private event must reach nobody
    past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)

    async def scenario() -> None:
        clients = [await Client.open(gateway.url, RT.token(u)) for u in users]
        clients.append(await Client.open(gateway.url))  # anonymous
        clients.append(await Client.open(gateway.url, RT.token(users[0])))  # 2nd of user 0
        for client in clients:
            await client.subscribe(auctions=[str(auction)])
        expected: dict[int, set[str]] = {i: set() for i in range(len(clients))}
        owners = [*users, None, users[0]]

        def publish(visibility: str, **kw: Any) -> str:
            row = publish_event(
                "auction_tick", auction_id=auction, event_data={"n": 1}, visibility=visibility, **kw
            )
            return str(row.event_id)

        for i, owner in enumerate(owners):
            if i % 4 == 0 or owner is None:
                continue
            eid = await asyncio.to_thread(publish, "private", user_id=owner)
            for j, o in enumerate(owners):
                if o == owner:
                    expected[j].add(eid)
        eid = await asyncio.to_thread(publish, "private", user_id=stranger)
        eid = await asyncio.to_thread(publish, "targeted", target_audience=sorted(targeted))
        for j, o in enumerate(owners):
            if o in targeted:
                expected[j].add(eid)
        eid = await asyncio.to_thread(publish, "authenticated")
        for j, o in enumerate(owners):
            if o is not None:
                expected[j].add(eid)
        await asyncio.to_thread(publish, "public", expires_at=past)  # expired: nobody
        await asyncio.to_thread(publish, "private", user_id=users[1], expires_at=past)
        marker = await asyncio.to_thread(publish, "public")
        for j in expected:
            expected[j].add(marker)
        for j, client in enumerate(clients):
            got: list[str] = []
            while not got or got[-1] != marker:
                frame = await client.recv()
                assert frame["type"] == "event"
                got.append(frame["event_id"])
            assert len(got) == len(set(got)), f"client {j} got duplicates"
            assert set(got) == expected[j], f"client {j} ({owners[j]})"
        for client in clients:
            await client.close()

    run(scenario())


def test_resume_delivers_exactly_the_missed_events_in_order(gw: Gateway, rt: RT) -> None:
    rt.use(gw)
    user, auction = uuid.uuid4(), uuid.uuid4()

    def publish(n: int) -> int:
        row = publish_event(
            "bid_placed",
            auction_id=auction,
            event_data={"n": n},
            visibility="public",
            broadcast_channels=["bids-" + auction.hex],
        )
        return int(row.sequence_number)

    async def scenario() -> None:
        client = await Client.open(gw.url, RT.token(user))
        await client.subscribe(auctions=[str(auction)])
        for n in (1, 2):
            await asyncio.to_thread(publish, n)
        seen = [await client.recv(), await client.recv()]
        assert [f["data"]["n"] for f in seen] == [1, 2]
        last = seen[-1]["seq"]
        await client.close()
        missed = [await asyncio.to_thread(publish, n) for n in (3, 4, 5)]
        client = await Client.open(gw.url, RT.token(user))
        frames = await client.subscribe(
            auctions=[str(auction)],
            topics=["bids-" + auction.hex],
            last_seq={f"auction:{auction}": last, "bids-" + auction.hex: last},
        )
        got = events(frames)
        assert [f["data"]["n"] for f in got] == [3, 4, 5]
        assert [f["seq"] for f in got] == missed == sorted(missed)
        assert not [f for f in frames if f["type"] == "gap"]
        assert frames[-1]["replayed"] == 3
        await asyncio.to_thread(publish, 6)  # live again, once, though two keys match
        live = await client.recv()
        assert live["data"]["n"] == 6
        await client.send({"type": "ping"})
        assert (await client.recv())["type"] == "pong"
        await client.close()

    run(scenario())


def test_a_gap_beyond_history_is_reported(gw: Gateway, rt: RT) -> None:
    rt.use(gw)
    user, auction = uuid.uuid4(), uuid.uuid4()
    rows = [
        publish_event("bid_placed", auction_id=auction, event_data={"n": n}, visibility="public")
        for n in (1, 2, 3)
    ]
    rt.execute(
        "UPDATE real_time_events SET generated_at = now() - interval '1 hour' "
        "WHERE event_id IN (:a, :b)",
        a=rows[0].event_id,
        b=rows[1].event_id,
    )

    async def scenario() -> list[dict[str, Any]]:
        client = await Client.open(gw.url, RT.token(user))
        frames = await client.subscribe(
            auctions=[str(auction)], last_seq={f"auction:{auction}": rows[0].sequence_number}
        )
        await client.close()
        return frames

    frames = run(scenario())
    gaps = [f for f in frames if f["type"] == "gap"]
    assert gaps == [
        {
            "type": "gap",
            "subscription": f"auction:{auction}",
            "last_seq": rows[0].sequence_number,
            "first_available_seq": rows[2].sequence_number,
            "recovered": False,
        }
    ]
    assert [f["data"]["n"] for f in events(frames)] == [3]
    assert frames.index(gaps[0]) < frames.index(events(frames)[0])


def test_unacked_event_is_redelivered_and_the_ack_recorded(gw: Gateway, rt: RT) -> None:
    rt.use(gw)
    user, auction = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> str:
        client = await Client.open(gw.url, RT.token(user))
        await client.subscribe(auctions=[str(auction)])
        row = await asyncio.to_thread(
            publish_event,
            "auction_ending",
            auction_id=auction,
            event_data={},
            visibility="private",
            user_id=user,
            ack_required=True,
            ack_timeout=1,
        )
        first = await client.recv()
        assert first["event_id"] == str(row.event_id) and first["ack_required"] is True
        again = await client.recv(timeout=5)  # not acked within 1 s: sent again
        assert again["event_id"] == first["event_id"] and again["attempt"] == 2
        await client.send({"type": "ack", "event_id": first["event_id"]})
        with pytest.raises(TimeoutError):
            await client.recv(timeout=2.0)  # acked: no third copy
        await client.close()
        return client.connection_id

    connection_id = run(scenario())
    row = rt.wait_until(
        lambda: (
            (
                r := rt.rows(
                    "SELECT acknowledgments, delivery_status FROM real_time_events "
                    "WHERE auction_id = :a",
                    a=auction,
                )[0]
            )
            and r["acknowledgments"]
            and r
        ),
        what="recorded ack",
    )
    assert row["acknowledgments"][f"{user}/{connection_id}"]["attempts"] == 2
    status = row["delivery_status"]["websocket"]
    assert (status["sent"], status["redelivered"], status["acked"], status["unacked"]) == (
        1,
        1,
        1,
        0,
    )


def test_redelivery_is_bounded(gateways: Any, rt: RT) -> None:
    gateway = gateways(CLARION_EVENT_MAX_REDELIVERIES="1")
    rt.use(gateway)
    user, auction = uuid.uuid4(), uuid.uuid4()

    async def scenario() -> None:
        client = await Client.open(gateway.url, RT.token(user))
        await client.subscribe(auctions=[str(auction)])
        await asyncio.to_thread(
            publish_event,
            "auction_ending",
            auction_id=auction,
            event_data={},
            ack_required=True,
            ack_timeout=1,
        )
        assert (await client.recv())["type"] == "event"
        assert (await client.recv(timeout=5))["attempt"] == 2
        with pytest.raises(TimeoutError):
            await client.recv(timeout=2.5)
        await client.close()

    run(scenario())
    rt.wait_until(
        lambda: (
            (
                r := rt.rows(
                    "SELECT delivery_status FROM real_time_events WHERE auction_id = :a", a=auction
                )[0]["delivery_status"]
            )
            and r["websocket"]["unacked"] == 1
        ),
        what="unacked recorded",
    )


def test_in_app_notification_reaches_every_connection_and_only_the_owner_reads(
    gw: Gateway, rt: RT
) -> None:
    settings = rt.use(gw)
    owner, other = uuid.uuid4(), uuid.uuid4()
    row = notify(
        owner,
        title="You've been outbid",
        message="Someone bid higher",
        category="bid",
        channels=["in_app"],
    )
    nid = str(row.notification_id)
    payload = json.dumps(
        {
            "type": "notification",
            "notification_id": nid,
            "title": "You've been outbid",
            "message": "Someone bid higher",
            "action_url": None,
            "action_label": None,
            "data": {},
        }
    )

    async def scenario() -> None:
        mine = [await Client.open(gw.url, RT.token(owner)) for _ in range(2)]
        theirs = await Client.open(gw.url, RT.token(other))
        client = redis.Redis.from_url(settings.redis_url)
        assert client.publish(f"clarion:user:{owner}", payload) >= 1
        client.close()
        for c in mine:
            frame = await c.recv()
            assert frame["type"] == "notification" and frame["notification_id"] == nid
        await theirs.send({"type": "read", "notification_id": nid})
        refused = await theirs.recv()
        assert refused["type"] == "error" and refused["error"] == "not_found"
        assert rt.row("notifications", "notification_id", nid)["read_at"] is None  # type: ignore[index]
        await mine[1].send({"type": "read", "notification_id": nid})
        assert (await mine[1].recv())["type"] == "receipt"
        await mine[0].send({"type": "click", "notification_id": nid})
        assert (await mine[0].recv())["report"] == "click"
        for c in (*mine, theirs):
            await c.close()

    run(scenario())
    final = rt.wait_until(
        lambda: (r := rt.row("notifications", "notification_id", nid)) and r["delivered_at"] and r,
        what="delivered_at",
    )
    assert final["status"] == "clicked" and final["is_read"] is True
    assert final["read_at"] is not None and final["clicked_at"] is not None
    assert final["delivered_at"] <= final["read_at"]


def test_unpublished_event_is_relayed(gw: Gateway, rt: RT) -> None:
    """A publisher that crashed between commit and publish: the gateway's relay publishes."""
    rt.use(gw)
    user, auction = uuid.uuid4(), uuid.uuid4()
    from sqlalchemy.orm import Session

    async def scenario() -> None:
        client = await Client.open(gw.url, RT.token(user))
        await client.subscribe(auctions=[str(auction)])

        def crash_after_commit() -> None:
            with Session(rt.engine) as s:
                publish_event(
                    "auction_status_changed",
                    auction_id=auction,
                    event_data={"old_status": "active", "new_status": "completed"},
                    visibility=Visibility.PUBLIC,
                    session=s,
                )
                s.info.pop("clarion_pending_events")  # the process "dies" before publishing
                s.commit()

        await asyncio.to_thread(crash_after_commit)
        row = rt.rows("SELECT published_at FROM real_time_events WHERE auction_id = :a", a=auction)
        assert row == [{"published_at": None}]
        frame = await client.recv(timeout=10)
        assert frame["event_type"] == "auction_status_changed"
        assert frame["category"] == "auction"
        await client.close()

    run(scenario())
    rt.wait_until(
        lambda: rt.rows(
            "SELECT published_at FROM real_time_events WHERE auction_id "
            "= :a AND published_at IS NOT NULL",
            a=auction,
        ),
        what="marked",
    )


def test_publish_in_a_transaction_waits_for_commit(gw: Gateway, rt: RT) -> None:
    settings = rt.use(gw)
    auction = uuid.uuid4()
    from sqlalchemy.orm import Session

    listener = redis.Redis.from_url(REDIS_URL).pubsub()
    listener.subscribe(settings.events_channel)
    assert listener.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
    with Session(rt.engine) as s:
        publish_event("bid_placed", auction_id=auction, event_data={}, session=s)
        s.rollback()
    with Session(rt.engine) as s:
        row = publish_event(
            "bid_placed",
            auction_id=auction,
            bid_id=uuid.uuid4(),
            event_data={"bid_amount": 150.00, "current_price": 140.00},
            priority="high",
            visibility="authenticated",
            session=s,
        )
        event_id = str(row.event_id)
        assert listener.get_message(timeout=0.5) is None  # not before commit
        s.commit()
    message = listener.get_message(timeout=5)
    assert message is not None
    published = json.loads(message["data"])
    assert published["event_id"] == event_id and published["category"] == "bid"
    assert published["priority"] == "high"
    assert listener.get_message(timeout=0.5) is None  # the rolled-back one never went out
    listener.close()
    assert len(rt.rows("SELECT 1 FROM real_time_events WHERE auction_id = :a", a=auction)) == 1
