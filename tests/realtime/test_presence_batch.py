"""The policy's presence question for a whole batch: one Redis round trip, the same
answers as ``Presence.is_present``, and no answer (None) when Redis is away."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
from rtkit import RT, Client, free_port, gateways_fixture, rt_fixture  # noqa: F401 - fixtures

from workers.presence import LivePresence, Presence

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(120)]


def evalsha_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_one_round_trip_answers_every_pair_like_is_present(gateways: Any, rt: RT) -> None:
    gw = gateways(processes=1)
    s = gw.settings
    client = redis.Redis.from_url(s.redis_url)
    presence = Presence(client, s.events_channel)
    alice, bob, carol = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    a1, a2, a3 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    pairs = [(u, a) for u in (alice, bob, carol) for a in (a1, a2, a3)]

    async def scenario() -> None:
        first = await Client.open(gw.url, RT.token(alice))
        await first.subscribe(auctions=[str(a1), str(a2)])
        second = await Client.open(gw.url, RT.token(bob))
        await second.subscribe(auctions=[str(a3)])
        third = await Client.open(gw.url, RT.token(carol))  # connected, subscribed to nothing
        await asyncio.to_thread(
            rt.wait_until,
            lambda: presence.is_present(bob, a3) and presence.is_present(carol),
            5,
            "presence written",
        )
        presence.watching(pairs[:1])  # loads the script
        before = evalsha_calls(client)
        found = presence.watching(pairs)
        assert evalsha_calls(client) - before == 1
        assert found == {(alice, a1), (alice, a2), (bob, a3)}
        assert found == {p for p in pairs if presence.is_present(*p)}
        await first.close()
        await asyncio.to_thread(
            rt.wait_until,
            lambda: not presence.watching([(alice, a1)]),
            5,
            "alice gone",
        )
        assert presence.watching(pairs) == {(bob, a3)}
        assert presence.watching([]) == set()
        await second.close()
        await third.close()

    try:
        asyncio.run(scenario())
    finally:
        client.close()


def test_no_answer_is_none_and_redis_is_left_alone_for_a_while() -> None:
    live = LivePresence.from_url(f"redis://127.0.0.1:{free_port()}/0", "clarion:events")
    live.retry_after = 0.5
    pair = [(uuid.uuid4(), uuid.uuid4())]
    started = time.monotonic()
    assert live.watching(pair) is None
    assert live.watching(pair) is None  # not asked again: no second timeout
    assert time.monotonic() - started < 1.5
    assert live._down_until > time.monotonic() - 0.5
    live.close()
