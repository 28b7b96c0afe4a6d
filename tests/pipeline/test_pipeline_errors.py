"""Each class of provider error, end to end through real processes and real SDKs.

Faults are injected into the shared sandboxes right before the test's own
notification is created; no other traffic is in flight then (every test waits
for its deliveries to end), so the fault meets this test's request.
"""

from __future__ import annotations

import time
from typing import Any

import dramatiq
import pytest
import redis

from channels.sandboxes.http import Fault

pytestmark = [pytest.mark.postgres, pytest.mark.redis]


def dead_letters(redis_client: redis.Redis, queue: str) -> list[dramatiq.Message[Any]]:
    raw = redis_client.hvals(f"dramatiq:{queue}.XQ.msgs")
    return [dramatiq.Message.decode(data) for data in raw]


def dead_letter_for(
    redis_client: redis.Redis, queue: str, delivery_id: object
) -> dramatiq.Message[Any] | None:
    for message in dead_letters(redis_client, queue):
        if message.args == (str(delivery_id),):
            return message
    return None


def test_retryable_error_is_retried_then_succeeds(stack: Any, pl: Any, sandboxes: Any) -> None:
    user = pl.user(email=True)
    sandboxes.ses.fail(Fault(status=503))
    notification_id = pl.notify(user, ["email"])

    notification, rows = pl.wait_final(notification_id, 1)
    delivery = rows["email"]
    assert delivery.status == "sent"
    assert delivery.attempts == 2
    assert len(pl.ses_requests(notification_id)) == 2
    outcomes = [(a.outcome, a.attempt_number) for a in pl.attempts(delivery.delivery_id)]
    assert outcomes == [("retryable", 1), ("sent", 2)]
    assert notification.status == "sent"
    assert notification.delivery_attempts == 2
    assert notification.provider_response["email"]["MessageId"] == delivery.provider_message_id
    # The 503 was retried away: it stays in the history, not as the current error.
    assert delivery.last_error is None
    assert notification.error_message is None


def test_retry_after_is_honoured(stack: Any, pl: Any, sandboxes: Any) -> None:
    user = pl.user(sms=True)
    sandboxes.twilio.fail(Fault(status=429, retry_after=1))
    notification_id = pl.notify(user, ["sms"])

    notification, rows = pl.wait_final(notification_id, 1)
    delivery = rows["sms"]
    assert delivery.status == "sent"
    first, second = pl.twilio_requests(user.sms)
    gap = second.at - first.at
    print(f"Retry-After: 1 -> second request {gap:.3f} s after the first")
    assert 0.95 <= gap < 5.0
    # A throttle waits without burning an attempt.
    assert (delivery.attempts, delivery.throttles) == (1, 1)
    outcomes = [a.outcome for a in pl.attempts(delivery.delivery_id)]
    assert outcomes == ["throttled", "sent"]
    assert pl.attempts(delivery.delivery_id)[0].response["retry_after"] == 1.0
    assert notification.status == "sent"


@pytest.mark.parametrize(
    ("channel", "fault", "error_text"),
    [
        # 21408: sending to that region is not enabled: our account, not the number.
        ("sms", Fault(status=400, body={"code": 21408}), "HTTP 400 code 21408"),
        (
            "email",
            Fault(status=400, body={"__type": "MessageRejected", "message": "Content rejected"}),
            "MessageRejected",
        ),
    ],
    ids=["twilio-21408", "ses-message-rejected"],
)
def test_permanent_error_fails_after_one_attempt_without_dead_letter(
    stack: Any,
    pl: Any,
    sandboxes: Any,
    redis_client: redis.Redis,
    channel: str,
    fault: Fault,
    error_text: str,
) -> None:
    user = pl.user(email=True, sms=True)
    sandbox = sandboxes.twilio if channel == "sms" else sandboxes.ses
    sandbox.fail(fault)
    notification_id = pl.notify(user, [channel])

    notification, rows = pl.wait_final(notification_id, 1)
    delivery = rows[channel]
    assert delivery.status == "failed"
    assert delivery.attempts == 1
    assert error_text in delivery.last_error
    assert delivery.last_error.startswith("PermanentError")
    assert delivery.dead_lettered_at is None
    [attempt] = pl.attempts(delivery.delivery_id)
    assert attempt.outcome == "permanent"
    requests = (
        pl.twilio_requests(user.sms) if channel == "sms" else pl.ses_requests(notification_id)
    )
    assert len(requests) == 1
    assert notification.status == "failed"
    assert notification.error_message == f"{channel}: {delivery.last_error}"
    # The message was acknowledged, not dead-lettered, and not retried.
    time.sleep(0.5)
    assert dead_letter_for(redis_client, delivery.queue_name, delivery.delivery_id) is None
    assert len(requests) == len(
        pl.twilio_requests(user.sms) if channel == "sms" else pl.ses_requests(notification_id)
    )
    # The number is not blamed for our account's problem.
    assert pl.address(user, channel).is_active


def test_exhausted_attempts_fail_and_dead_letter(
    stack: Any, pl: Any, sandboxes: Any, redis_client: redis.Redis
) -> None:
    user = pl.user(email=True)
    sandboxes.ses.fail(Fault(status=503), times=2)
    notification_id = pl.notify(user, ["email"], max_attempts=2)

    notification, rows = pl.wait_final(notification_id, 1)
    delivery = rows["email"]
    assert delivery.status == "failed"
    assert delivery.attempts == 2
    assert delivery.last_error == "RetryableError: SES InternalFailure: injected 503"
    assert delivery.dead_lettered_at is not None
    assert [a.outcome for a in pl.attempts(delivery.delivery_id)] == ["retryable", "retryable"]
    assert len(pl.ses_requests(notification_id)) == 2
    assert notification.status == "failed"
    assert notification.error_message == f"email: {delivery.last_error}"
    assert notification.delivery_attempts == 2

    # The message sits in the email queue's dead-letter set.
    queue = delivery.queue_name
    assert queue == "email"
    dead = pl.wait_until(
        lambda: dead_letter_for(redis_client, queue, delivery.delivery_id),
        timeout=5,
        what="the dead letter",
    )
    assert dead.message_id == delivery.message_id
    assert dead.actor_name == "deliver_email"
    assert redis_client.zcard(f"dramatiq:{queue}.XQ") >= 1
    assert redis_client.hlen(f"dramatiq:{queue}.XQ.msgs") >= 1
    # Nothing more was sent after the dead letter.
    time.sleep(0.5)
    assert len(pl.ses_requests(notification_id)) == 2


def test_invalid_email_fails_only_its_channel(stack: Any, pl: Any, sandboxes: Any) -> None:
    user = pl.user(email="bidder-at-example.com", sms=True)
    notification_id = pl.notify(user, ["email", "sms"])

    notification, rows = pl.wait_final(notification_id, 2)
    assert rows["email"].status == "failed"
    assert "not a valid email address" in rows["email"].last_error
    assert rows["email"].dead_lettered_at is None
    [attempt] = pl.attempts(rows["email"].delivery_id)
    assert attempt.outcome == "bad_address"
    assert pl.ses_requests(notification_id) == []  # refused before any request

    assert rows["sms"].status == "sent"
    assert len(pl.twilio_requests(user.sms)) == 1
    assert notification.status == "sent"
    assert set(notification.provider_response) == {"email", "sms"}
    assert notification.provider_response["sms"]["sid"] == rows["sms"].provider_message_id


def test_unregistered_push_token_fails_only_its_channel(
    stack: Any, pl: Any, sandboxes: Any
) -> None:
    user = pl.user(push=True, webhook=True)
    sandboxes.fcm.unregister(user.push)
    notification_id = pl.notify(user, ["push", "webhook"])

    notification, rows = pl.wait_final(notification_id, 2)
    push = rows["push"]
    assert push.status == "failed"
    assert push.attempts == 1
    assert "UNREGISTERED" in push.last_error
    assert push.last_error.startswith("BadAddressError")
    assert [a.outcome for a in pl.attempts(push.delivery_id)] == ["bad_address"]
    assert len(pl.fcm_requests(user.push)) == 1
    # FCM said the token is dead: the address is disabled.
    address = pl.address(user, "push")
    assert not address.is_active
    assert address.disabled_at is not None

    assert rows["webhook"].status == "delivered"
    assert len(pl.webhook_requests(user)) == 1
    assert notification.status == "delivered"
    assert notification.provider_response["push"]["error_code"] == "UNREGISTERED"
