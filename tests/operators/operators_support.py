"""Support of the operators' tests: real worker and scheduler processes, the CLI.

Brokers: Redis DB 13 (other suites use 15 and 14) and the local RabbitMQ,
whose Clarion queues are purged before each stack starts (no vhost of our
own). The provider sandboxes run in this process (:class:`SandboxFarm`).
The processes, polling and broker reset are ``tests/harness.py``'s, shared
with the pipeline tier.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Sequence
from typing import Any

from harness import CLARION, ROOT, Rows, wait_until
from sqlalchemy.engine import Engine

from channels.sandboxes.farm import SandboxFarm
from models.enums import Channel
from models.notifications import Delivery, UserAddress

REDIS_URL = os.environ.get("CLARION_TEST_OPERATORS_REDIS_URL", "redis://127.0.0.1:6379/13")
AMQP_URL = os.environ.get("CLARION_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
BROKERS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}


class Ops(Rows):
    """The database, the sandboxes and the CLI, for one broker."""

    def __init__(self, engine: Engine, farm: SandboxFarm, env: dict[str, str], broker: str) -> None:
        super().__init__(engine)
        self.farm = farm
        self.env = env
        self.broker = broker

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
