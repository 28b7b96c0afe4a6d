"""The gateway's Redis subscription cut and restored: every connected client ends with every
event exactly once, in sequence order, and ``/healthz`` is 503 for as long as it cannot receive.

A real ``clarion gateway`` process on a Redis server of the test's own (a port in 6440-6449),
so the test can cut the gateway's subscription (an ACL that forbids it to subscribe again,
``CLIENT KILL TYPE pubsub``) or stop and restart the server, while ``publish_event`` writes
rows to PostgreSQL and publishes them.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from rtkit import RT, Client, Gateway, gateways_fixture, rt_fixture  # noqa: F401 - fixtures

from clarion import publish_event
from clarion.core.settings import Settings, reset_settings
from realtime.fanin import PING_INTERVAL, PONG_TIMEOUT

# Long scenarios of many real processes and CLI runs: the default 120 s guard
# against a hang is too close to their duration on a loaded machine.
pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.timeout(300)]

PORTS = range(6440, 6450)


class RedisServer:
    """A redis-server of the test's own, without persistence, that can be stopped and started."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.port = self._free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def _free_port() -> int:
        for port in PORTS:
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
        raise RuntimeError("no free port in 6440-6449 for a Redis of the test's own")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", str(self.tmp)),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()
        RT.wait_until(lambda: _pings(client), 20, "the test's redis-server to answer")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(20)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=5)


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(name="own_redis")
def own_redis_fixture(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def health(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{gateway.port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return int(answer.status), json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), json.loads(exc.read())


def wait_health(gateway: Gateway, status: int) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        code, body = health(gateway)
        return body if code == status else None

    return RT.wait_until(check, 30, f"/healthz to answer {status}")


def publisher(redis_url: str, gateway: Gateway) -> None:
    """Point this process's publish_event at ``redis_url`` and the gateway's channel."""
    reset_settings(Settings.from_env({**gateway.env, "CLARION_REDIS_URL": redis_url}))


def publish(auction: uuid.UUID, n: int, **kwargs: Any) -> int:
    row = publish_event(
        "bid_placed",
        auction_id=auction,
        event_data={"n": n},
        broadcast_channels=["lot-" + auction.hex],
        **kwargs,
    )
    return int(row.sequence_number)


class Reader:
    """Reads a client's frames as they come (an unread client would stop answering pings)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.frames: list[dict[str, Any]] = []
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            self.frames.append(await self.client.recv(timeout=120))

    def _count(self, kind: str) -> int:
        return sum(f["type"] == kind for f in self.frames)

    async def settle(self, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` events, then for the answer to a ping (so a duplicate queued
        behind them is caught without waiting a fixed time); return the frames but pongs."""
        deadline = time.monotonic() + 60
        while self._count("event") < count and not self.task.done():
            assert time.monotonic() < deadline, f"only {self._count('event')} of {count} events"
            await asyncio.sleep(0.05)
        pongs = self._count("pong")
        await self.client.send({"type": "ping"})
        while self._count("pong") == pongs and not self.task.done():
            assert time.monotonic() < deadline, "no pong"
            await asyncio.sleep(0.05)
        if self.task.done():
            self.task.result()  # the connection failed: say how
        self.task.cancel()
        return [f for f in self.frames if f["type"] != "pong"]


def check_books(frames: list[dict[str, Any]], expected: list[int]) -> None:
    assert [f["type"] for f in frames] == ["event"] * len(frames), frames
    seqs = [f["seq"] for f in frames]
    assert sorted(seqs) == sorted(expected), f"missing {set(expected) - set(seqs)}, got {seqs}"
    assert len(seqs) == len(set(seqs)), f"an event came twice: {seqs}"
    assert seqs == sorted(seqs), f"out of sequence order: {seqs}"


async def open_clients(
    gateway: Gateway, auction: uuid.UUID, users: list[uuid.UUID]
) -> list[Reader]:
    readers = []
    for i, user in enumerate(users):
        client = await Client.open(gateway.url, RT.token(user))
        # The last client subscribes under two keys: it must still get each event once.
        topics = ["lot-" + auction.hex] if i == len(users) - 1 else []
        await client.subscribe(auctions=[str(auction)], topics=topics)
        readers.append(Reader(client))
    return readers


def test_events_published_while_the_subscription_is_refused_are_replayed(
    gateways: Any, own_redis: RedisServer, rt: RT
) -> None:
    admin = own_redis.client()
    # The publisher has a user of its own, so the test can forbid the gateway's (default)
    # user to subscribe while publishing still works.
    admin.execute_command("ACL", "SETUSER", "pub", "on", ">pub-pass", "~*", "&*", "+@all")
    gateway = gateways(CLARION_REDIS_URL=own_redis.url, CLARION_BROKER_URL=own_redis.url)
    publisher(f"redis://pub:pub-pass@127.0.0.1:{own_redis.port}/0", gateway)
    auction = uuid.uuid4()
    users = [uuid.uuid4() for _ in range(3)]
    wait_health(gateway, 200)

    async def scenario() -> None:
        clients = await open_clients(gateway, auction, users)
        expected = [await asyncio.to_thread(publish, auction, n) for n in range(3)]
        admin.execute_command("ACL", "SETUSER", "default", "resetchannels")
        admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        down = await asyncio.to_thread(wait_health, gateway, 503)
        assert down["redis"] == "down" and down["reason"]
        expected += [await asyncio.to_thread(publish, auction, n) for n in range(3, 8)]
        private = await asyncio.to_thread(
            publish, auction, 99, visibility="private", user_id=users[0]
        )
        assert health(gateway)[0] == 503  # still cut: nothing told it otherwise
        admin.execute_command("ACL", "SETUSER", "default", "allchannels")
        await asyncio.to_thread(wait_health, gateway, 200)
        expected += [await asyncio.to_thread(publish, auction, n) for n in range(8, 10)]
        for i, client in enumerate(clients):
            mine = sorted([*expected, private]) if i == 0 else expected
            check_books(await client.settle(len(mine)), mine)
            await client.client.close()

    asyncio.run(scenario())
    assert "replayed" in gateway.log()


def test_client_kill_under_load_loses_nothing(
    gateways: Any, own_redis: RedisServer, rt: RT
) -> None:
    admin = own_redis.client()
    gateway = gateways(CLARION_REDIS_URL=own_redis.url, CLARION_BROKER_URL=own_redis.url)
    publisher(own_redis.url, gateway)
    auction = uuid.uuid4()
    wait_health(gateway, 200)
    published: list[int] = []
    done = threading.Event()

    def load() -> None:
        try:
            for n in range(300):
                published.append(publish(auction, n))
                time.sleep(0.005)  # a steady stream, not a burst
        finally:
            done.set()

    async def scenario() -> None:
        clients = await open_clients(gateway, auction, [uuid.uuid4() for _ in range(3)])
        thread = threading.Thread(target=load)
        thread.start()
        kills = 0
        while not done.is_set() and kills < 3:
            if len(published) >= 50 * (kills + 1):
                killed = await asyncio.to_thread(
                    admin.execute_command, "CLIENT", "KILL", "TYPE", "pubsub"
                )
                kills += int(killed or 0)
                await asyncio.to_thread(wait_health, gateway, 200)
            await asyncio.sleep(0.01)
        await asyncio.to_thread(thread.join)
        assert kills >= 1, "the load ended before the subscription could be cut"
        for client in clients:
            check_books(await client.settle(len(published)), published)
            await client.client.close()

    asyncio.run(scenario())
    assert "Redis subscription lost" in gateway.log()


def test_redis_restarted_without_data(gateways: Any, own_redis: RedisServer, rt: RT) -> None:
    gateway = gateways(CLARION_REDIS_URL=own_redis.url, CLARION_BROKER_URL=own_redis.url)
    publisher(own_redis.url, gateway)
    auction = uuid.uuid4()
    wait_health(gateway, 200)

    async def scenario() -> None:
        clients = await open_clients(gateway, auction, [uuid.uuid4() for _ in range(2)])
        expected = [await asyncio.to_thread(publish, auction, n) for n in range(2)]
        own_redis.stop()
        await asyncio.to_thread(wait_health, gateway, 503)
        # Written while Redis is down: the publish fails, the rows stay.
        expected += [await asyncio.to_thread(publish, auction, n) for n in range(2, 6)]
        own_redis.start()
        await asyncio.to_thread(wait_health, gateway, 200)
        expected += [await asyncio.to_thread(publish, auction, n) for n in range(6, 8)]
        for client in clients:
            check_books(await client.settle(len(expected)), expected)
            await client.client.close()

    asyncio.run(scenario())


def test_a_gateway_held_up_past_the_pong_timeout_keeps_its_subscription(
    gateways: Any, own_redis: RedisServer, rt: RT
) -> None:
    """A gateway whose own loop did not run for longer than the PING and PONG timeouts (a
    fan-out to thousands, a storm of handshakes, a starved process; here SIGSTOP) reads what
    Redis sent meanwhile before judging Redis: no loss, no replay, events keep coming."""
    gateway = gateways(
        processes=1,
        CLARION_REDIS_URL=own_redis.url,
        CLARION_BROKER_URL=own_redis.url,
        # The clients' keepalive is not what this test is about: a stopped process would
        # time its pings out too.
        CLARION_GATEWAY_HEARTBEAT="600",
        CLARION_GATEWAY_HEARTBEAT_TIMEOUT="600",
    )
    publisher(own_redis.url, gateway)
    auction = uuid.uuid4()
    wait_health(gateway, 200)

    async def scenario() -> None:
        clients = await open_clients(gateway, auction, [uuid.uuid4()])
        expected = [await asyncio.to_thread(publish, auction, 0)]
        await asyncio.sleep(PING_INTERVAL + 0.5)  # a PING went out and was answered
        gateway.process.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(PING_INTERVAL + PONG_TIMEOUT + 2)
        finally:
            gateway.process.send_signal(signal.SIGCONT)
        expected.append(await asyncio.to_thread(publish, auction, 1))
        await asyncio.sleep(PING_INTERVAL + PONG_TIMEOUT)  # another round of PING and PONG
        assert health(gateway)[0] == 200
        expected.append(await asyncio.to_thread(publish, auction, 2))
        for client in clients:
            check_books(await client.settle(len(expected)), expected)
            await client.client.close()

    asyncio.run(scenario())
    assert "Redis subscription lost" not in gateway.log()


def test_a_silent_redis_is_a_lost_subscription(
    gateways: Any, own_redis: RedisServer, rt: RT
) -> None:
    """Redis stops answering without closing anything (SIGSTOP: a partition, a hung server):
    the unanswered PING is a loss (503), and what was published meanwhile is replayed."""
    gateway = gateways(CLARION_REDIS_URL=own_redis.url, CLARION_BROKER_URL=own_redis.url)
    publisher(own_redis.url, gateway)
    auction = uuid.uuid4()
    wait_health(gateway, 200)
    assert own_redis.process is not None

    async def scenario() -> None:
        clients = await open_clients(gateway, auction, [uuid.uuid4()])
        expected = [await asyncio.to_thread(publish, auction, 0)]
        own_redis.process.send_signal(signal.SIGSTOP)
        try:
            down = await asyncio.to_thread(wait_health, gateway, 503)
            assert "no answer from Redis" in down["reason"], down
        finally:
            own_redis.process.send_signal(signal.SIGCONT)
        await asyncio.to_thread(wait_health, gateway, 200)
        expected.append(await asyncio.to_thread(publish, auction, 1))
        for client in clients:
            check_books(await client.settle(len(expected)), expected)
            await client.client.close()

    asyncio.run(scenario())
    assert "Redis subscription lost" in gateway.log()
