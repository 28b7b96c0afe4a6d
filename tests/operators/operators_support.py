"""Support of the operators' tests: real worker and scheduler processes, the CLI.

Brokers: Redis DB 13 (other suites use 15 and 14) and the local RabbitMQ,
whose Clarion queues are purged before each stack starts (no vhost of our
own). The provider sandboxes run in this process (:class:`SandboxFarm`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker

from channels.sandboxes.farm import SandboxFarm
from models.enums import Channel
from models.notifications import Delivery, Notification, UserAddress
from workers.queues import all_queues

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[2]
CLARION = str(Path(sys.executable).with_name("clarion"))
REDIS_URL = os.environ.get("CLARION_TEST_OPERATORS_REDIS_URL", "redis://127.0.0.1:6379/13")
AMQP_URL = os.environ.get("CLARION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BROKERS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}
DATA_TABLES = (
    "delivery_attempts",
    "notification_deliveries",
    "notifications",
    "user_addresses",
)


def wait_until(predicate: Callable[[], T], *, timeout: float = 20.0, what: str = "") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)


def reset_broker(url: str) -> None:
    if url.startswith("amqp"):
        import pika

        conn = pika.BlockingConnection(pika.URLParameters(url))
        try:
            for q in all_queues():
                for name in (q, f"{q}.DQ", f"{q}.XQ"):
                    channel = conn.channel()
                    with contextlib.suppress(pika.exceptions.ChannelClosedByBroker):
                        channel.queue_purge(name)
                    if channel.is_open:
                        channel.close()
        finally:
            conn.close()
    else:
        import redis

        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()


class Stack:
    """``clarion worker`` and ``clarion scheduler`` subprocesses."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, *, worker: bool = True, scheduler: bool = True) -> Stack:
        kinds = [k for k, on in (("worker", worker), ("scheduler", scheduler)) if on]
        for kind in kinds:
            args = ["worker", "--processes", "1", "--threads", "4"] if kind == "worker" else [kind]
            log = self.log_dir / f"{kind}-{uuid.uuid4().hex[:6]}.log"
            with log.open("wb") as out:
                popen = subprocess.Popen(
                    [CLARION, *args],
                    env=self.env,
                    cwd=ROOT,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.procs.append((kind, popen, log))
        ready = {"worker": "Worker process is ready for action", "scheduler": "scheduler started"}
        for kind, popen, log in self.procs:

            def up(p: subprocess.Popen[bytes] = popen, lg: Path = log, k: str = kind) -> bool:
                if p.poll() is not None:
                    raise AssertionError(f"{k} exited {p.returncode}: {lg.read_text()[-2000:]}")
                return ready[k] in lg.read_text(errors="replace")

            wait_until(up, timeout=30, what=f"{kind} to start")
        return self

    def stop(self) -> None:
        for _, popen, _ in self.procs:
            if popen.poll() is None:
                popen.send_signal(signal.SIGTERM)
        for _, popen, _ in self.procs:
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
        self.procs = []

    def logs(self) -> str:
        return "\n".join(f"--- {k} ---\n{log.read_text()[-4000:]}" for k, _, log in self.procs)


class Ops:
    """The database, the sandboxes and the CLI, for one broker."""

    def __init__(self, engine: Engine, farm: SandboxFarm, env: dict[str, str], broker: str) -> None:
        self.engine = engine
        self.farm = farm
        self.env = env
        self.broker = broker
        self.sessions = sessionmaker(engine, expire_on_commit=False)

    def cli(
        self, *args: str, env: dict[str, str] | None = None, input_text: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [CLARION, *args],
            env={**self.env, **(env or {})},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            input=input_text,
            check=False,
        )

    def cli_json(self, *args: str, **kwargs: Any) -> list[dict[str, Any]]:
        done = self.cli(*args, "--json", **kwargs)
        assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]

    def user(
        self, *, email: bool = True, sms: bool = False, webhook_secret: str | None = None
    ) -> uuid.UUID:
        user_id = uuid.uuid4()
        rows = []
        if email:
            rows.append(
                UserAddress(
                    user_id=user_id,
                    channel=Channel.EMAIL,
                    address=f"bidder-{user_id.hex[:8]}@example.com",
                )
            )
        if sms:
            rows.append(
                UserAddress(
                    user_id=user_id,
                    channel=Channel.SMS,
                    address="+1415555" + str(user_id.int % 10**4).zfill(4),
                )
            )
        if webhook_secret:
            rows.append(
                UserAddress(
                    user_id=user_id,
                    channel=Channel.WEBHOOK,
                    address=f"{self.farm.webhook.url}/hooks/{user_id.hex[:8]}",
                    secret=webhook_secret,
                )
            )
        with self.sessions.begin() as s:
            s.add_all(rows)
        return user_id

    def notify(
        self, user_id: uuid.UUID, channels: Sequence[str], *, max_attempts: int = 1
    ) -> uuid.UUID:
        from clarion.api import notify

        with self.sessions.begin() as s:
            row = notify(
                user_id,
                title="You were outbid",
                message="Someone bid more on lot 7.",
                category="bid",
                channels=list(channels),
                max_attempts=max_attempts,
                session=s,
            )
            return row.notification_id

    def deliveries(self, notification_id: uuid.UUID) -> dict[str, Delivery]:
        with self.sessions() as s:
            rows = s.scalars(
                sa.select(Delivery).where(Delivery.notification_id == notification_id)
            ).all()
        return {str(Channel(r.channel).value): r for r in rows}

    def notification(self, notification_id: uuid.UUID) -> Notification:
        with self.sessions() as s:
            return s.get_one(Notification, notification_id)

    def ses_requests(self, notification_id: uuid.UUID) -> int:
        marker = str(notification_id).encode()
        return sum(1 for r in self.farm.ses.requests_to("/outbound-emails") if marker in r.body)

    def wait_status(
        self, notification_id: uuid.UUID, channel: str, *statuses: str, timeout: float = 20
    ) -> Delivery:
        def check() -> Delivery | None:
            d = self.deliveries(notification_id).get(channel)
            return d if d is not None and d.status in statuses else None

        return wait_until(
            check, timeout=timeout, what=f"{channel} of {notification_id} to be {statuses}"
        )


def clean(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {', '.join(DATA_TABLES)} CASCADE")
