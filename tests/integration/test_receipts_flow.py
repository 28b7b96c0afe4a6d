"""Reports, suppression, unsubscribe and failover through the deliverer and the real tables.

The deliverer is driven directly (no broker) with providers of this module
that record their calls; the circuit breaker runs on the test Redis.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from channels.base import OutgoingMessage, PermanentError, Provider, Receipt, RetryableError
from channels.registry import Providers
from channels.unsubscribe import UnsubscribeLinks, read_token
from clarion.core.db import session_factory
from clarion.core.settings import Settings
from models.claims import Claims
from models.enums import Channel
from models.receipts import (
    Applied,
    DeliveryReport,
    Reported,
    SuppressionRequest,
    apply_report,
    receipt_counts,
)
from models.suppressions import lift
from models.unsubscribes import record_unsubscribe
from models.writeback import WriteBackStore
from workers.breaker import Breaker, State
from workers.delivery import Deliverer, Result
from workers.retry_policy import RetryPolicy

pytestmark = pytest.mark.postgres

REDIS_URL = os.environ.get("CLARION_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
SECRET = "unsubscribe-secret-for-the-tests-0123456789"


class Scripted(Provider):
    """Answers with the next of ``script`` ("ok", "retry", "permanent"), then "ok"."""

    channel: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, name: str, *script: str) -> None:
        self.name = name  # type: ignore[misc]
        self.script = list(script)
        self.sent: list[OutgoingMessage] = []

    def send(self, message: OutgoingMessage) -> Receipt:
        step = self.script.pop(0) if self.script else "ok"
        if step == "retry":
            raise RetryableError("503 from the sandbox", provider=self.name)
        if step == "permanent":
            raise PermanentError("MessageRejected", provider=self.name)
        self.sent.append(message)
        return Receipt(self.name, f"{self.name}-{uuid.uuid4().hex[:12]}", {"ok": True})


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def email(
    engine: Engine, address: str = "alice@example.com", *, user: uuid.UUID | None = None
) -> tuple[uuid.UUID, uuid.UUID]:
    """A claimed email delivery for a user with ``address``: (delivery id, user id)."""
    user = user or uuid.uuid4()
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO user_addresses (user_id, channel, address) VALUES (:u, 'email', :a)"
                " ON CONFLICT DO NOTHING"
            ),
            {"u": user, "a": address},
        )
        conn.execute(
            sa.text(
                "INSERT INTO notifications (user_id, notification_type, category, priority,"
                " title, message, delivery_channels, max_attempts) VALUES (:u, 'email', 'bid',"
                " 'normal', 'Outbid', 'You were outbid', '[\"email\"]', 3)"
            ),
            {"u": user},
        )
    [claimed] = Claims(session_factory(engine)).claim_due(
        batch_size=10,
        lease_seconds=600,
        queue_for=lambda c, p: "email",
        make_message=lambda d, q: uuid.uuid4().hex,
    )
    return claimed.delivery_id, user


def deliverer(engine: Engine, *chain: Provider, breaker: Breaker | None = None) -> Deliverer:
    return Deliverer(
        WriteBackStore(engine),
        Providers(Settings(), chains={Channel.EMAIL: list(chain)}),
        policy=RetryPolicy(min_backoff=0.01, max_backoff=0.02),
        lease_seconds=60,
        breaker=breaker,
        unsubscribe=UnsubscribeLinks("https://notify.example.com", SECRET),
    )


def row(engine: Engine, delivery_id: uuid.UUID) -> tuple[str, str, str | None]:
    with engine.connect() as conn:
        found = conn.execute(
            sa.text(
                "SELECT d.status, n.status, d.provider_message_id FROM notification_deliveries d"
                " JOIN notifications n USING (notification_id) WHERE d.delivery_id = :d"
            ),
            {"d": delivery_id},
        ).one()
    return found[0], found[1], found[2]


def history(engine: Engine, delivery_id: uuid.UUID) -> list[tuple[str, str, str | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT provider, outcome, response->>'receipt' FROM delivery_attempts"
                " WHERE delivery_id = :d ORDER BY attempt_id"
            ),
            {"d": delivery_id},
        )
        return [(r[0], r[1], r[2]) for r in rows]


def report(
    message_id: str | None,
    reported: Reported,
    kind: str,
    receipt_id: str | None = None,
    **kw: object,
) -> DeliveryReport:
    return DeliveryReport(
        provider="ses",
        receipt_id=receipt_id or f"sns:{uuid.uuid4()}",
        kind=kind,
        reported=reported,
        provider_message_id=message_id,
        **kw,  # type: ignore[arg-type]
    )


def apply(engine: Engine, r: DeliveryReport) -> Applied:
    with engine.begin() as conn:
        return apply_report(conn, r)


def test_reports_move_a_delivery_forward_only(clean_db: Engine) -> None:
    ses = Scripted("ses")
    delivery_id, _ = email(clean_db)
    assert deliverer(clean_db, ses).deliver(delivery_id).result is Result.SENT
    message_id = row(clean_db, delivery_id)[2]
    bounce = report(message_id, Reported.FAILED, "Bounce", error="permanent bounce (General)")
    assert apply(clean_db, bounce) is Applied.MOVED
    assert row(clean_db, delivery_id)[:2] == ("failed", "failed")
    # A late Delivery never overwrites the bounce; it is kept in the history.
    late = report(message_id, Reported.DELIVERED, "Delivery")
    assert apply(clean_db, late) is Applied.RECORDED
    assert row(clean_db, delivery_id)[:2] == ("failed", "failed")
    # The same report twice changes nothing, not even the history.
    assert apply(clean_db, bounce) is Applied.DUPLICATE
    assert history(clean_db, delivery_id) == [
        ("ses", "sent", None),
        ("ses", "permanent", "Bounce"),
        ("ses", "delivered", "Delivery"),
    ]


def test_a_delivery_report_marks_it_delivered_and_rolls_up(clean_db: Engine) -> None:
    delivery_id, _ = email(clean_db)
    deliverer(clean_db, Scripted("ses")).deliver(delivery_id)
    message_id = row(clean_db, delivery_id)[2]
    assert (
        apply(clean_db, report(message_id, Reported.PROGRESS, "DeliveryDelay")) is Applied.RECORDED
    )
    assert row(clean_db, delivery_id)[:2] == ("sent", "sent")
    assert apply(clean_db, report(message_id, Reported.DELIVERED, "Delivery")) is Applied.MOVED
    assert row(clean_db, delivery_id)[:2] == ("delivered", "delivered")
    # A bounce after delivery (it happens) does not move it back.
    assert apply(clean_db, report(message_id, Reported.FAILED, "Bounce")) is Applied.RECORDED
    assert row(clean_db, delivery_id)[:2] == ("delivered", "delivered")


def test_unknown_message_ids_are_counted(clean_db: Engine) -> None:
    assert (
        apply(clean_db, report("nobody-knows", Reported.DELIVERED, "Delivery")) is Applied.UNKNOWN
    )
    assert apply(clean_db, report("nor-this", Reported.DELIVERED, "Delivery")) is Applied.UNKNOWN
    with clean_db.connect() as conn:
        assert receipt_counts(conn)[("ses", "unknown")] == 2


def test_a_hard_bounce_suppresses_until_lifted(clean_db: Engine) -> None:
    ses = Scripted("ses")
    d = deliverer(clean_db, ses)
    first, user = email(clean_db, "Bouncy@Example.com")
    d.deliver(first)
    bounce = report(
        row(clean_db, first)[2],
        Reported.FAILED,
        "Bounce",
        suppress=(SuppressionRequest(Channel.EMAIL, "bouncy@example.com", "bounce"),),
    )
    apply(clean_db, bounce)
    second, _ = email(clean_db, "Bouncy@Example.com", user=user)
    outcome = d.deliver(second)
    assert outcome.result is Result.FAILED
    assert outcome.error is not None and outcome.error.startswith("suppressed:")
    assert len(ses.sent) == 1  # no provider call for the second
    assert history(clean_db, second) == []
    with clean_db.begin() as conn:
        assert lift(conn, Channel.EMAIL, "bouncy@example.com")
    third, _ = email(clean_db, "Bouncy@Example.com", user=user)
    assert d.deliver(third).result is Result.SENT
    assert len(ses.sent) == 2


def test_emails_carry_a_working_one_click_link_and_an_unsubscribe_is_honoured(
    clean_db: Engine,
) -> None:
    ses = Scripted("ses")
    d = deliverer(clean_db, ses)
    first, user = email(clean_db)
    d.deliver(first)
    headers = ses.sent[0].headers
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = headers["List-Unsubscribe"]
    assert link.startswith("<https://notify.example.com/unsubscribe/") and link.endswith(">")
    token = link[1:-1].rsplit("/", 1)[1]
    found = read_token(SECRET, token)
    assert found is not None and (found.user_id, found.category) == (user, "bid")
    with clean_db.begin() as conn:
        assert record_unsubscribe(conn, user, "bid", "one_click")
        assert not record_unsubscribe(conn, user, "bid", "one_click")  # idempotent
    second, _ = email(clean_db, user=user)
    outcome = d.deliver(second)
    assert outcome.result is Result.FAILED
    assert outcome.error is not None and outcome.error.startswith("unsubscribed:")
    assert len(ses.sent) == 1


def test_a_retryable_failure_fails_over_to_the_next_provider(
    clean_db: Engine, redis_client: redis.Redis
) -> None:
    ses, smtp = Scripted("ses", "retry"), Scripted("smtp")
    breaker = Breaker(redis_client, threshold=5, window=30, cooldown=30)
    d = deliverer(clean_db, ses, smtp, breaker=breaker)
    delivery_id, _ = email(clean_db)
    assert d.deliver(delivery_id).result is Result.RETRY
    assert d.deliver(delivery_id).result is Result.SENT
    assert [m.delivery_id for m in smtp.sent] == [delivery_id]
    assert [(p, o) for p, o, _ in history(clean_db, delivery_id)] == [
        ("ses", "retryable"),
        ("smtp", "sent"),
    ]


def test_a_permanent_error_never_fails_over(clean_db: Engine, redis_client: redis.Redis) -> None:
    ses, smtp = Scripted("ses", "permanent"), Scripted("smtp")
    # One counted failure would open it: a permanent error must not count.
    breaker = Breaker(redis_client, threshold=1, window=30, cooldown=30)
    delivery_id, _ = email(clean_db)
    outcome = deliverer(clean_db, ses, smtp, breaker=breaker).deliver(delivery_id)
    assert outcome.result is Result.FAILED
    assert smtp.sent == []
    assert breaker.state("ses") is State.CLOSED


def test_the_breaker_opens_skips_then_probes(redis_client: redis.Redis) -> None:
    now = [1000.0]
    breaker = Breaker(redis_client, threshold=3, window=10, cooldown=5, clock=lambda: now[0])
    other = Breaker(redis_client, threshold=3, window=10, cooldown=5, clock=lambda: now[0])
    assert not breaker.failed("ses")
    now[0] += 20  # outside the window: forgotten
    assert not breaker.failed("ses")
    assert not other.failed("ses")  # counted across processes
    assert breaker.failed("ses")
    assert breaker.state("ses") is State.OPEN
    assert not other.allow("ses")
    now[0] += 6
    assert other.state("ses") is State.HALF_OPEN
    assert other.allow("ses")  # the one probe
    assert not breaker.allow("ses")  # nobody else meanwhile
    other.failed("ses")  # the probe failed: open again
    assert breaker.state("ses") is State.OPEN
    now[0] += 6
    assert breaker.allow("ses")
    breaker.succeeded("ses")
    assert other.state("ses") is State.CLOSED and other.allow("ses")


def test_dead_tokens_and_gone_endpoints_are_suppressions_too(clean_db: Engine) -> None:
    from clarion.addresses import add_address

    user = uuid.uuid4()
    with clean_db.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO user_addresses (user_id, channel, address) VALUES"
                " (:u, 'push', 'fcm-token-dead-0001'), (:u, 'webhook', 'https://hooks.example.com/x')"
            ),
            {"u": user},
        )
        ids = [r[0] for r in conn.execute(sa.text("SELECT address_id FROM user_addresses"))]
    WriteBackStore(clean_db).disable_addresses(ids, "fcm reported the address unregistered")

    def active() -> set[tuple[str, str, str]]:
        with clean_db.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT channel, reason, source FROM suppressions WHERE lifted_at IS NULL")
            )
            return {(r[0], r[1], r[2]) for r in rows}

    assert active() == {("push", "unregistered", "fcm"), ("webhook", "gone", "webhook")}
    # The application registering the token again vouches for it.
    with Session(clean_db) as s, s.begin():
        add_address(user, "push", "fcm-token-dead-0001", session=s)
    assert active() == {("webhook", "gone", "webhook")}
