"""Fixtures and helpers of the real-time tests and the gateway's fault tests: real
``clarion gateway`` processes, PostgreSQL (the session's ``pg_url``) and Redis db 12.

Not a conftest.py: test modules import the fixtures from here by name (the
shared database helpers live in ``tests/testdb.py`` for the same reason: a
bare ``conftest`` import is shadowed by whichever conftest came first).

* ``gateways``: a factory starting a gateway subprocess with settings of its
  own (a free port, a Redis events channel of its own so that concurrent runs
  never hear each other); stopped with SIGTERM at the end of the test.
* ``gw`` (module scope): one gateway shared by a module's tests; each test
  uses users and auctions of its own, so tests do not clean up between them.
* ``rt``: helpers — tokens, pointing publish_event at a gateway, reading rows,
  ``wait_until``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from harness import CLARION, ROOT, wait_until
from sqlalchemy.engine import Engine
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Origin

from clarion.core.settings import Settings, reset_settings
from realtime.auth import make_token

T = TypeVar("T")

REDIS_URL = os.environ.get("CLARION_TEST_RT_REDIS_URL", "redis://127.0.0.1:6379/12")
SECRET = "test-secret-for-the-gateway-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log_path: Path

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.env)

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def health(self) -> dict[str, Any]:
        """The body of ``GET /healthz`` (refusal counters, JWKS state...)."""
        url = f"http://127.0.0.1:{self.port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                body: dict[str, Any] = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            body = json.loads(exc.read())
        return body


def start_gateway(pg_url: str, tmp: Path, *args: str, **overrides: str) -> Gateway:
    """A ``clarion gateway`` process with ``args`` (a ``--port`` there is where it listens)."""
    port = int(args[args.index("--port") + 1]) if "--port" in args else free_port()
    env = {
        "CLARION_DATABASE_URL": pg_url,
        "CLARION_REDIS_URL": REDIS_URL,
        "CLARION_BROKER_URL": REDIS_URL,
        "CLARION_JWT_SECRET": SECRET,
        "CLARION_GATEWAY_PORT": str(port if "--port" not in args else free_port()),
        "CLARION_EVENTS_CHANNEL": f"clarion:test:events:{uuid.uuid4().hex[:8]}",
        "CLARION_GATEWAY_FLUSH_INTERVAL": "0.3",
        "CLARION_GATEWAY_HEARTBEAT": "5",
        "CLARION_GATEWAY_HEARTBEAT_TIMEOUT": "5",
        "CLARION_EVENT_RELAY_AFTER": "1",
        "CLARION_EVENT_HISTORY_SECONDS": "60",
        **overrides,
    }
    full_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    log_path = tmp / f"gateway-{port}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [CLARION, "gateway", *args],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    gateway = Gateway(process, port, env, log_path)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gateway exited {process.returncode}:\n{gateway.log()}")
        if "listening on" in gateway.log():
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                return gateway
        time.sleep(0.05)
    gateway.stop()
    raise RuntimeError(f"gateway did not start:\n{gateway.log()}")


class RT:
    """Helpers bound to the session database and one gateway's settings."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def use(self, gateway: Gateway) -> Settings:
        """Point this process's settings (publish_event) at ``gateway``'s channel."""
        settings = gateway.settings
        reset_settings(settings)
        return settings

    @staticmethod
    def token(user_id: uuid.UUID | str, **kwargs: Any) -> str:
        return make_token(user_id, SECRET, **kwargs)

    def row(self, table: str, key: str, value: Any) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            found = (
                conn.execute(sa.text(f"SELECT * FROM {table} WHERE {key} = :v"), {"v": value})
                .mappings()
                .first()
            )
        return dict(found) if found else None

    def rows(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(sql), params).mappings()]

    def execute(self, sql: str, **params: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params)

    @staticmethod
    def wait_until(check: Callable[[], T], timeout: float = 10.0, what: str = "") -> T:
        """``harness.wait_until`` with this tier's shorter default deadline."""
        return wait_until(check, timeout, what)


class Client:
    """A WebSocket client that counts what it sent and received (payload bytes)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent_bytes = self.sent_msgs = self.recv_bytes = self.recv_msgs = 0
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def open(
        cls,
        url: str,
        token: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        origin: str | None = None,
        **query: str,
    ) -> Client:
        params = dict(query)
        if token is not None:
            params["token"] = token
        qs = "&".join(f"{k}={v}" for k, v in params.items())
        ws = await connect(
            f"{url}?{qs}" if qs else url,
            compression=None,
            open_timeout=10,
            additional_headers=headers,
            origin=Origin(origin) if origin else None,
        )
        client = cls(ws)
        client.welcome = await client.recv()
        assert client.welcome["type"] == "welcome"
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        text = json.dumps(frame)
        await self.ws.send(text)
        self.sent_bytes += len(text.encode())
        self.sent_msgs += 1

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(text, str)
        self.recv_bytes += len(text.encode())
        self.recv_msgs += 1
        frame: dict[str, Any] = json.loads(text)
        return frame

    async def recv_until(self, kind: str, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Frames received up to and including the first of type ``kind``."""
        frames = []
        while True:
            frame = await self.recv(timeout)
            frames.append(frame)
            if frame["type"] == kind:
                return frames

    async def subscribe(self, **frame: Any) -> list[dict[str, Any]]:
        await self.send({"type": "subscribe", **frame})
        return await self.recv_until("subscribed")

    async def close(self) -> None:
        await self.ws.close()

    @property
    def connection_id(self) -> str:
        return str(self.welcome["connection_id"])


@pytest.fixture(name="gateways")
def gateways_fixture(pg_url: str, tmp_path: Path) -> Iterator[Callable[..., Gateway]]:
    started: list[Gateway] = []

    def factory(*args: str, **overrides: str) -> Gateway:
        gateway = start_gateway(pg_url, tmp_path, *args, **overrides)
        started.append(gateway)
        return gateway

    yield factory
    for gateway in started:
        gateway.stop()


@pytest.fixture(scope="module", name="gw")
def gw_fixture(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    gateway = start_gateway(pg_url, tmp_path_factory.mktemp("gateway"))
    yield gateway
    gateway.stop()


@pytest.fixture(name="rt")
def rt_fixture(engine: Engine) -> Iterator[RT]:
    yield RT(engine)
    reset_settings(None)
