"""Every channel end to end: notify() -> scheduler -> Redis -> worker -> real SDK -> sandbox."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
import redis

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

ALL_CHANNELS = ("email", "sms", "push", "webhook", "in_app")


def _next_message(pubsub: Any, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and message["type"] == "message":
            return json.loads(message["data"])  # type: ignore[no-any-return]
    return None


def test_every_channel_delivers_and_records_the_provider_answer(
    stack: Any, pl: Any, sandboxes: Any, redis_client: redis.Redis
) -> None:
    user = pl.user(email=True, sms=True, push=True, webhook=True)
    pubsub = redis_client.pubsub()
    pubsub.subscribe(f"clarion:user:{user.user_id}")
    try:
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]
        notification_id = pl.notify(user, ALL_CHANNELS, action_url="https://auctions.test/lot/7")
        published = _next_message(pubsub, timeout=15)
    finally:
        pubsub.close()

    notification, rows = pl.wait_final(notification_id, len(ALL_CHANNELS))

    # in_app: the payload reached the user's real-time channel.
    assert published is not None, "nothing published on the user's channel"
    assert published["type"] == "notification"
    assert published["notification_id"] == str(notification_id)
    assert published["title"] == "You were outbid"
    assert published["action_url"] == "https://auctions.test/lot/7"

    # Each provider got exactly one request, for this user.
    ses = pl.ses_requests(notification_id)
    twilio = pl.twilio_requests(user.sms)
    fcm = pl.fcm_requests(user.push)
    hooks = pl.webhook_requests(user)
    assert (len(ses), len(twilio), len(fcm), len(hooks)) == (1, 1, 1, 1)
    assert ses[0].json()["Destination"]["ToAddresses"] == [user.email]
    assert json.loads(fcm[0].body)["message"]["data"]["notification_id"] == str(notification_id)

    # Delivery rows: providers that only accept are "sent", webhook and in_app "delivered".
    expected = {
        "email": ("sent", "ses"),
        "sms": ("sent", "twilio"),
        "push": ("sent", "fcm"),
        "webhook": ("delivered", "webhook"),
        "in_app": ("delivered", "in_app"),
    }
    assert {c: (d.status, d.provider) for c, d in rows.items()} == expected
    assert all(d.attempts == 1 and d.sent_at is not None for d in rows.values())
    assert all(d.message_id for d in rows.values())

    # The provider's own answers, under each channel's name.
    response = notification.provider_response
    assert set(response) == set(ALL_CHANNELS)
    assert response["email"]["MessageId"].startswith("0100")
    assert rows["email"].provider_message_id == response["email"]["MessageId"]
    assert response["sms"]["sid"].startswith("SM")
    assert response["sms"]["status"] == "queued"
    assert rows["sms"].provider_message_id == response["sms"]["sid"]
    assert response["push"]["name"].startswith(f"projects/{sandboxes.fcm.project_id}/messages/")
    assert rows["push"].provider_message_id == response["push"]["name"]
    assert response["webhook"] == {"status": 200}
    assert response["in_app"]["channel"] == f"clarion:user:{user.user_id}"
    assert response["in_app"]["receivers"] >= 1

    assert notification.status == "delivered"
    assert notification.sent_at is not None and notification.delivered_at is not None
    assert notification.delivery_attempts == len(ALL_CHANNELS)
    assert notification.error_message is None

    # One attempt row per delivery, naming the provider and its answer.
    for channel, delivery in rows.items():
        attempts = pl.attempts(delivery.delivery_id)
        assert len(attempts) == 1, channel
        attempt = attempts[0]
        assert attempt.outcome == expected[channel][0]
        assert attempt.provider == expected[channel][1]
        assert attempt.attempt_number == 1
        assert attempt.response == response[channel]
        assert attempt.duration_ms >= 0


def test_webhook_signature_verifies_with_an_independent_hmac(stack: Any, pl: Any) -> None:
    user = pl.user(webhook=True)
    notification_id = pl.notify(user, ["webhook"], title="Auction won", message="Lot 7 is yours.")
    _, rows = pl.wait_final(notification_id, 1)
    assert rows["webhook"].status == "delivered"

    [request] = pl.webhook_requests(user)
    headers = request.headers
    webhook_id = headers["webhook-id"]
    timestamp = headers["webhook-timestamp"]
    assert webhook_id == f"msg_{rows['webhook'].delivery_id.hex}"
    assert abs(int(timestamp) - time.time()) < 60

    # Standard Webhooks, written out here rather than through channels.webhook:
    # base64(HMAC-SHA256(base64-decoded secret, "{id}.{timestamp}.{body}")).
    key = base64.b64decode(user.webhook_secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + request.body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert headers["webhook-signature"] == expected
    # A different secret does not verify.
    other = hmac.new(b"another secret", signed, hashlib.sha256).digest()
    assert headers["webhook-signature"] != "v1," + base64.b64encode(other).decode()

    body = json.loads(request.body)
    assert body["type"] == "notification"
    assert body["data"]["notification_id"] == str(notification_id)
    assert body["data"]["title"] == "Auction won"
    assert headers["content-type"] == "application/json"
