"""Presence for the delivery policy end to end: a real ``clarion gateway``, a real
scheduler and worker, the real SDKs against the sandboxes.

The scheduler asks the gateways' live presence in Redis (one round trip per
claimed batch). The gateway here flushes its connection rows only every 60 s,
so the rows never show the subscriptions during a test: what the policy
decides can only come from the live answer. When Redis does not answer, the
rows with a recent heartbeat are the fallback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from pipekit import REDIS_URL, Pipeline, StackFactory, User
from rtkit import RT, Client, Gateway, free_port, gateways_fixture, rt_fixture  # noqa: F401
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from clarion.api import notify
from models.notifications import Delivery, NotificationTemplate
from workers.presence import Presence

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

UTC = dt.UTC
CHANNELS = ("in_app", "push", "email")


@pytest.fixture
def template(engine: Engine) -> str:
    kind = f"l{uuid.uuid4().hex[:8]}"
    with sessionmaker(engine).begin() as s:
        s.add(
            NotificationTemplate(
                auction_type=kind,
                event="outbid",
                category="bid",
                title="You've been outbid",
                message="Someone bid higher than your {amount} bid",
                priority="high",
                channels=list(CHANNELS),
                collapsible=True,
                collapse_window_seconds=2,
                collapse_title="You've been outbid {count} times",
                collapse_message="Outbid {count} times, current price {amount}",
            )
        )
    return f"{kind}/outbid"


def outbid(pl: Pipeline, user: User, template: str, auction: uuid.UUID) -> uuid.UUID:
    with pl.sessions.begin() as s:
        return notify(
            user.user_id,
            template=template,
            template_data={"amount": "$20"},
            auction_id=auction,
            session=s,
        ).notification_id


def settled(pl: Pipeline, notification_id: uuid.UUID) -> dict[str, Delivery]:
    def done() -> dict[str, Delivery] | None:
        found = pl.deliveries(notification_id)
        final = {"sent", "delivered", "failed", "cancelled"}
        if set(found) == set(CHANNELS) and all(d.status in final for d in found.values()):
            return found
        return None

    return pl.wait_until(done, timeout=30, what="deliveries to end")


def subscriptions_in_rows(pl: Pipeline, user: User) -> list[Any]:
    with pl.engine.connect() as conn:
        return list(
            conn.execute(
                sa.text(
                    "SELECT auction_subscriptions FROM websocket_connections WHERE user_id = :u"
                ),
                {"u": user.user_id},
            ).scalars()
        )


def in_app_only(found: dict[str, Delivery]) -> bool:
    return found["in_app"].status == "delivered" and all(
        found[c].status == "cancelled" and found[c].policy_reason == "user watching live"
        for c in ("push", "email")
    )


def every_channel(found: dict[str, Delivery]) -> bool:
    return {c: found[c].status for c in CHANNELS} == {
        "in_app": "delivered",
        "push": "sent",
        "email": "sent",
    }


def test_subscribed_in_app_only_unsubscribed_or_gone_every_channel(
    stacks: StackFactory, pl: Pipeline, template: str, gateways: Any
) -> None:
    channel = f"clarion:test:events:{uuid.uuid4().hex[:8]}"
    gw: Gateway = gateways(
        CLARION_REDIS_URL=REDIS_URL,
        CLARION_EVENTS_CHANNEL=channel,
        CLARION_GATEWAY_FLUSH_INTERVAL="60",
    )
    stacks(CLARION_EVENTS_CHANNEL=channel).start()
    presence = Presence(redis.Redis.from_url(REDIS_URL), channel)
    user = pl.user(email=True, push=True)
    watched, left, last = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()

    def soon(pair: tuple[uuid.UUID, uuid.UUID], expected: bool) -> None:
        pl.wait_until(
            lambda: (pair in presence.watching([pair])) is expected,
            timeout=5,
            what=f"presence {expected}",
        )

    async def scenario() -> dict[str, dict[str, Delivery]]:
        results = {}
        client = await Client.open(gw.url, RT.token(user.user_id))
        await client.subscribe(auctions=[str(watched), str(left), str(last)])
        await asyncio.to_thread(soon, (user.user_id, last), True)
        # The rows know the connection but not yet its subscriptions.
        rows = await asyncio.to_thread(subscriptions_in_rows, pl, user)
        assert rows == [[]], rows
        note = await asyncio.to_thread(outbid, pl, user, template, watched)
        results["subscribed"] = await asyncio.to_thread(settled, pl, note)
        await client.send({"type": "unsubscribe", "auctions": [str(left)]})
        await client.recv_until("unsubscribed")
        await asyncio.to_thread(soon, (user.user_id, left), False)
        note = await asyncio.to_thread(outbid, pl, user, template, left)
        results["unsubscribed"] = await asyncio.to_thread(settled, pl, note)
        await client.close()
        await asyncio.to_thread(soon, (user.user_id, last), False)
        note = await asyncio.to_thread(outbid, pl, user, template, last)
        results["disconnected"] = await asyncio.to_thread(settled, pl, note)
        return results

    try:
        results = asyncio.run(scenario())
    finally:
        presence.client.close()
    assert in_app_only(results["subscribed"]), results["subscribed"]
    assert every_channel(results["unsubscribed"]), results["unsubscribed"]
    assert every_channel(results["disconnected"]), results["disconnected"]
    assert len(pl.fcm_requests(user.push)) == 2


def test_without_an_answer_from_redis_the_fresh_rows_decide(
    stacks: StackFactory, pl: Pipeline, template: str, engine: Engine
) -> None:
    # The worker publishes in-app through the real Redis; the scheduler's
    # presence Redis does not answer (nothing listens on that port).
    stacks("worker").start(scheduler=False)
    stacks("scheduler", CLARION_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0").start(worker=False)
    user = pl.user(email=True, push=True)
    first, second = uuid.uuid4(), uuid.uuid4()
    now = dt.datetime.now(UTC)
    with engine.begin() as conn:
        connection_id = conn.execute(
            sa.text(
                "INSERT INTO websocket_connections (user_id, session_id, socket_id,"
                " connection_status, client_ip, user_agent, last_heartbeat, connected_at,"
                " subscriptions, auction_subscriptions) VALUES (:u, 's', 'k', 'connected',"
                " '127.0.0.1', 'test', :now, :now, '[]', CAST(:subs AS jsonb))"
                " RETURNING connection_id"
            ),
            {"u": user.user_id, "now": now, "subs": json.dumps([str(first), str(second)])},
        ).scalar_one()
    live = outbid(pl, user, template, first)
    assert in_app_only(settled(pl, live))
    assert pl.ses_requests(live) == [] and pl.fcm_requests(user.push) == []
    # The gateway crashed: the row stays 'connected', its heartbeat ages.
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE websocket_connections SET last_heartbeat = :old WHERE connection_id = :c"
            ),
            {"old": now - dt.timedelta(minutes=5), "c": connection_id},
        )
    stale = outbid(pl, user, template, second)
    assert every_channel(settled(pl, stale))
    assert len(pl.ses_requests(stale)) == 1 and len(pl.fcm_requests(user.push)) == 1
