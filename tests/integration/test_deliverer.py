"""The deliverer driven directly (no broker): outcomes and rows for odd providers."""

from __future__ import annotations

import uuid
from typing import ClassVar

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from channels.base import OutgoingMessage, Provider, Receipt
from channels.registry import Providers
from clarion.core.db import session_factory
from clarion.core.settings import Settings
from models.claims import Claims
from models.enums import Channel
from models.writeback import WriteBackStore
from workers.delivery import Deliverer, Result
from workers.retry_policy import RetryPolicy

pytestmark = pytest.mark.postgres


class Broken(Provider):
    """An adapter with a bug: raises something that is not a ChannelError."""

    name = "broken"
    channel: ClassVar[Channel] = Channel.IN_APP

    def __init__(self) -> None:
        self.calls = 0

    def send(self, message: OutgoingMessage) -> Receipt:
        self.calls += 1
        raise ValueError(f"cannot handle {message.to}")


def deliveries(engine: Engine, count: int, channels: str) -> list[uuid.UUID]:
    claims = Claims(session_factory(engine))
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels, max_attempts) SELECT :u, 'in_app', 'bid',"
                " 'normal', 'T', 'M', CAST(:c AS jsonb), 2 FROM generate_series(1, :n)"
            ),
            {"u": uuid.uuid4(), "n": count, "c": channels},
        )
    claimed = claims.claim_due(
        batch_size=100,
        lease_seconds=600,
        queue_for=lambda c, p: Channel(c).value,
        make_message=lambda d, q: uuid.uuid4().hex,
    )
    return [c.delivery_id for c in claimed]


def deliverer(engine: Engine, providers: Providers) -> Deliverer:
    return Deliverer(
        WriteBackStore(engine),
        providers,
        policy=RetryPolicy(min_backoff=0.01, max_backoff=0.02),
        lease_seconds=60,
    )


def test_an_unexpected_adapter_error_is_retried_then_exhausted(clean_db: Engine) -> None:
    [delivery_id] = deliveries(clean_db, 1, '["in_app"]')
    broken = Broken()
    d = deliverer(clean_db, Providers(Settings(), {Channel.IN_APP: broken}))
    first = d.deliver(delivery_id)
    assert first.result is Result.RETRY
    assert first.error is not None and "unexpected ValueError" in first.error
    # The message reaches nobody's logs or rows: only the exception's type.
    assert "cannot handle" not in first.error
    second = d.deliver(delivery_id)
    assert second.result is Result.EXHAUSTED
    assert broken.calls == 2
    with clean_db.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT d.status, d.attempts, d.dead_lettered_at IS NOT NULL, n.status"
                " FROM notification_deliveries d JOIN notifications n USING (notification_id)"
            )
        ).one()
    assert tuple(row) == ("failed", 2, True, "failed")


def test_unconfigured_provider_fails_the_channel_with_the_setting_named(
    clean_db: Engine,
) -> None:
    [delivery_id] = deliveries(clean_db, 1, '["sms"]')
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO user_addresses (user_id, channel, address)"
                " SELECT user_id, 'sms', '+14155550100' FROM notifications"
            )
        )
    d = deliverer(clean_db, Providers(Settings()))  # no Twilio credentials
    outcome = d.deliver(delivery_id)
    assert outcome.result is Result.FAILED
    assert outcome.error is not None and "CLARION_TWILIO_ACCOUNT_SID" in outcome.error
    # A second copy of the message finds nothing to send.
    assert d.deliver(delivery_id).result is Result.DROPPED
