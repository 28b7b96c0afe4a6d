"""End-to-end fixtures: provider sandboxes in this process, real Clarion processes beside it.

Not a conftest.py: the pipeline tier (``tests/pipeline/conftest.py``) and the
fault suite (``tests/chaos``) import these fixtures by name, as the real-time
tier does with ``rtkit`` (a bare ``conftest`` import is shadowed by whichever
conftest came first).

The sandboxes (SES, Twilio, FCM, a webhook receiver) run in threads of the
pytest process; ``clarion scheduler`` and ``clarion worker`` run as real
subprocesses against the session's PostgreSQL database and Redis DB 15, with
the real SDKs pointed at the sandboxes.

* ``stack`` (module scope): one worker and one scheduler shared by a module's
  tests. Each test uses users and notifications of its own and looks only at
  its own rows and its own sandbox requests, so the tests do not clean up
  between each other; the state is reset once, before the stack starts.
* ``stacks`` (function scope): a factory for tests that need processes with
  settings of their own (three schedulers, no private webhooks, ...). Those
  tests live in modules without a shared ``stack``: two schedulers on one
  database would claim each other's notifications.
* ``pl``: helpers to create users and notifications and to read back rows and
  sandbox requests; ``pl.wait_until`` polls with a deadline instead of sleeping.

The processes, polling and broker reset are ``tests/harness.py``'s, shared
with the operators' tier.

Sandbox faults are global to a sandbox, so a test injects them only while no
other test's traffic is in flight: every test waits for its deliveries to end.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import os
import secrets
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import redis
import sqlalchemy as sa
from harness import Rows, Stack, assert_clean_exit, clarion_env, wait_until
from sqlalchemy.engine import Engine
from testdb import truncate_data

from channels.sandboxes.fcm import FCMSandbox, write_fake_service_account
from channels.sandboxes.http import RecordedRequest
from channels.sandboxes.ses import SEND_PATH, SESSandbox
from channels.sandboxes.twilio import TwilioSandbox
from channels.sandboxes.webhook import WebhookReceiver
from clarion.api import notify
from models.enums import Channel
from models.notifications import Delivery, DeliveryAttempt, Notification, UserAddress

REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
FCM_PROJECT = "clarion-pipeline"
TWILIO_FROM = "+15005550006"
TERMINAL = frozenset({"sent", "delivered", "failed", "cancelled"})


def new_webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


# --- sandboxes -----------------------------------------------------------------------


@dataclasses.dataclass
class Sandboxes:
    ses: SESSandbox
    twilio: TwilioSandbox
    fcm: FCMSandbox
    webhook: WebhookReceiver
    webhook_secret: str
    service_account: Path


@pytest.fixture(scope="session")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    secret = new_webhook_secret()
    ses = SESSandbox().start()
    twilio = TwilioSandbox().start()
    fcm = FCMSandbox(project_id=FCM_PROJECT).start()
    hook = WebhookReceiver(secret=secret).start()
    key = write_fake_service_account(
        tmp_path_factory.mktemp("fcm") / "service-account.json", fcm.token_uri, FCM_PROJECT
    )
    fcm.trust(key)
    try:
        yield Sandboxes(ses, twilio, fcm, hook, secret, key)  # type: ignore[arg-type]
    finally:
        for sandbox in (ses, twilio, fcm, hook):
            sandbox.stop()


@pytest.fixture(scope="session")
def pipeline_env(
    pg_url: str, sandboxes: Sandboxes, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """The environment of every Clarion subprocess (tests add or remove settings)."""
    return clarion_env(
        tmp_path_factory.mktemp("aws"),
        {
            "CLARION_DATABASE_URL": pg_url,
            "CLARION_BROKER_URL": REDIS_URL,
            "CLARION_REDIS_URL": REDIS_URL,
            "CLARION_POLL_INTERVAL": "0.5",
            "CLARION_LEASE_SECONDS": "30",
            "CLARION_RETRY_MIN_BACKOFF": "0.2",
            "CLARION_RETRY_MAX_BACKOFF": "1",
            "CLARION_PROVIDER_TIMEOUT": "5",
            "CLARION_LOG_LEVEL": "INFO",
            "CLARION_EMAIL_FROM": "notifications@clarion.test",
            "CLARION_SES_ENDPOINT_URL": sandboxes.ses.url,
            "CLARION_AWS_ACCESS_KEY_ID": "AKIDPIPELINE",
            "CLARION_AWS_SECRET_ACCESS_KEY": "not-a-secret",
            "CLARION_TWILIO_ACCOUNT_SID": sandboxes.twilio.account_sid,
            "CLARION_TWILIO_AUTH_TOKEN": sandboxes.twilio.auth_token,
            "CLARION_TWILIO_FROM": TWILIO_FROM,
            "CLARION_TWILIO_BASE_URL": sandboxes.twilio.url,
            "CLARION_FCM_SERVICE_ACCOUNT_FILE": str(sandboxes.service_account),
            "CLARION_FCM_PROJECT_ID": FCM_PROJECT,
            "CLARION_FCM_ENDPOINT": sandboxes.fcm.endpoint,
            "CLARION_WEBHOOK_ALLOW_PRIVATE": "true",
        },
    )


def reset_state(engine: Engine, redis_client: redis.Redis) -> None:
    """Empty the data tables and the test Redis DB (no Clarion process may be running)."""
    truncate_data(engine)
    redis_client.flushdb()


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@pytest.fixture(scope="module")
def stack(
    pipeline_env: dict[str, str],
    engine: Engine,
    redis_client: redis.Redis,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:
    """One worker (1 process, 8 threads) and one scheduler, shared by a module."""
    reset_state(engine, redis_client)
    shared = Stack(dict(pipeline_env), tmp_path_factory.mktemp("logs"), "shared")
    try:
        shared.worker()
        shared.scheduler()
        shared.wait_ready()
        yield shared
    finally:
        codes = shared.stop()
        reset_state(engine, redis_client)
    assert_clean_exit(codes, shared)


class StackFactory:
    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.created: list[Stack] = []

    def __call__(self, name: str = "own", **settings: str | None) -> Stack:
        """A stack with ``settings`` added to the environment (None removes one)."""
        env = dict(self.env)
        for key, value in settings.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        created = Stack(env, self.log_dir, f"{name}{len(self.created)}")
        self.created.append(created)
        return created


@pytest.fixture
def stacks(
    pipeline_env: dict[str, str],
    engine: Engine,
    redis_client: redis.Redis,
    tmp_path: Path,
) -> Iterator[StackFactory]:
    """Processes of a test's own; the state is reset before and after."""
    reset_state(engine, redis_client)
    factory = StackFactory(pipeline_env, tmp_path)
    try:
        yield factory
    finally:
        results = [(s, s.stop()) for s in factory.created]
        reset_state(engine, redis_client)
    for created, codes in results:
        assert_clean_exit(codes, created)


# --- rows and requests -----------------------------------------------------------------


@dataclasses.dataclass
class User:
    user_id: uuid.UUID
    email: str | None = None
    sms: str | None = None
    push: str | None = None
    webhook: str | None = None
    webhook_secret: str | None = None

    @property
    def webhook_path(self) -> str:
        assert self.webhook is not None
        return "/" + self.webhook.split("/", 3)[3]


class Pipeline(Rows):
    """Helpers over the test database and the sandboxes."""

    wait_until = staticmethod(wait_until)

    def __init__(self, engine: Engine, sandboxes: Sandboxes) -> None:
        super().__init__(engine)
        self.sandboxes = sandboxes

    # --- users ---------------------------------------------------------------------------
    def user(
        self,
        *,
        email: str | bool = False,
        sms: str | bool = False,
        push: str | bool = False,
        webhook: str | bool = False,
        webhook_secret: str | None = None,
    ) -> User:
        """A new user with the addresses asked for (True: a fresh valid one)."""
        user_id = uuid.uuid4()
        tag = user_id.hex[:12]
        user = User(user_id)
        if email:
            user.email = email if isinstance(email, str) else f"bidder-{tag}@example.com"
        if sms:
            user.sms = (
                sms if isinstance(sms, str) else "+1555" + str(secrets.randbelow(10**7)).zfill(7)
            )
        if push:
            user.push = push if isinstance(push, str) else f"fcm-token-{tag}"
        if webhook:
            user.webhook = (
                webhook if isinstance(webhook, str) else f"{self.sandboxes.webhook.url}/hooks/{tag}"
            )
            user.webhook_secret = webhook_secret or self.sandboxes.webhook_secret
        rows = []
        for channel in (Channel.EMAIL, Channel.SMS, Channel.PUSH, Channel.WEBHOOK):
            address = getattr(user, channel.value)
            if address is None:
                continue
            rows.append(
                UserAddress(
                    user_id=user_id,
                    channel=channel,
                    address=address,
                    secret=user.webhook_secret if channel is Channel.WEBHOOK else None,
                )
            )
        with self.sessions.begin() as s:
            s.add_all(rows)
        return user

    # --- notifications --------------------------------------------------------------------
    def notify(self, user: User, channels: Sequence[str], **kwargs: Any) -> uuid.UUID:
        """``clarion.notify()`` in a transaction of its own; returns the notification id."""
        kwargs.setdefault("title", "You were outbid")
        kwargs.setdefault("message", "Someone bid more on lot 7.")
        kwargs.setdefault("category", "bid")
        with self.sessions.begin() as s:
            row = notify(user.user_id, channels=list(channels), session=s, **kwargs)
            return row.notification_id

    def insert(
        self,
        user: User,
        channels: Sequence[str],
        *,
        count: int = 1,
        scheduled_at: dt.datetime | None = None,
        expires_at: dt.datetime | None = None,
        max_attempts: int = 3,
    ) -> list[uuid.UUID]:
        """Insert notifications with plain SQL in one statement (as another service would)."""
        ids = [uuid.uuid4() for _ in range(count)]
        statement = sa.text(
            """
            INSERT INTO notifications (
                notification_id, user_id, notification_type, category, priority,
                title, message, delivery_channels, scheduled_at, expires_at, max_attempts
            )
            SELECT id, CAST(:user_id AS uuid), CAST(:primary AS notification_channel),
                   'bid', 'normal', 'Auction ending', 'Lot 7 closes soon.',
                   CAST(:channels AS jsonb), CAST(:scheduled_at AS timestamptz),
                   CAST(:expires_at AS timestamptz), CAST(:max_attempts AS integer)
            FROM unnest(CAST(:ids AS uuid[])) AS id
            """
        )
        with self.engine.begin() as conn:
            conn.execute(
                statement,
                {
                    "ids": ids,
                    "user_id": user.user_id,
                    "primary": channels[0],
                    "channels": json.dumps(list(channels)),
                    "scheduled_at": scheduled_at,
                    "expires_at": expires_at,
                    "max_attempts": max_attempts,
                },
            )
        return ids

    # --- reading back ------------------------------------------------------------------------
    def attempts(self, delivery_id: uuid.UUID) -> list[DeliveryAttempt]:
        with self.sessions() as s:
            return list(
                s.scalars(
                    sa.select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_id == delivery_id)
                    .order_by(DeliveryAttempt.attempt_id)
                )
            )

    def address(self, user: User, channel: str) -> UserAddress:
        with self.sessions() as s:
            return s.scalars(
                sa.select(UserAddress).where(
                    UserAddress.user_id == user.user_id, UserAddress.channel == channel
                )
            ).one()

    def wait_final(
        self, notification_id: uuid.UUID, channels: int, *, timeout: float = 15.0
    ) -> tuple[Notification, dict[str, Delivery]]:
        """Wait until the notification has ``channels`` deliveries, all ended."""

        def done() -> dict[str, Delivery] | None:
            rows = self.deliveries(notification_id)
            if len(rows) == channels and all(d.status in TERMINAL for d in rows.values()):
                return rows
            return None

        rows = wait_until(done, timeout=timeout, what=f"deliveries of {notification_id} to end")
        return self.notification(notification_id), rows

    # --- sandbox requests ----------------------------------------------------------------------
    def ses_requests(self, notification_id: uuid.UUID) -> list[RecordedRequest]:
        marker = str(notification_id).encode()
        return [r for r in self.sandboxes.ses.requests_to(SEND_PATH) if marker in r.body]

    def twilio_requests(self, number: str | None) -> list[RecordedRequest]:
        return [
            r
            for r in self.sandboxes.twilio.requests_to("/Messages.json")
            if parse_qs(r.body.decode()).get("To") == [number]
        ]

    def fcm_requests(self, token: str | None) -> list[RecordedRequest]:
        return [
            r
            for r in self.sandboxes.fcm.requests_to("messages:send")
            if json.loads(r.body).get("message", {}).get("token") == token
        ]

    def webhook_requests(self, user: User) -> list[RecordedRequest]:
        return self.sandboxes.webhook.requests_to(user.webhook_path)

    def warm_up(self, *channels: str) -> None:
        """Deliver one notification per channel so the worker has built those providers."""
        user = self.user(email=True, sms=True, push=True, webhook=True)
        notification_id = self.notify(user, channels)
        _, rows = self.wait_final(notification_id, len(channels), timeout=30)
        assert {d.status for d in rows.values()} <= {"sent", "delivered"}, rows


@pytest.fixture
def pl(engine: Engine, sandboxes: Sandboxes) -> Pipeline:
    return Pipeline(engine, sandboxes)
