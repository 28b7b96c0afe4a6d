"""In-app delivery: the notification row is the inbox; delivery publishes it live.

The notification is published on the user's real-time channel in Redis
(``clarion:user:<user_id>``, :func:`realtime.wire.user_channel`), where the
WebSocket gateways pick it up. A
successful publish marks the delivery delivered: the inbox row is readable
whether or not a client is connected right now.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Protocol

import redis

from channels.base import OutgoingMessage, Provider, Receipt, RetryableError
from models.enums import Channel
from realtime.wire import notification_message, user_channel


class Publisher(Protocol):
    def publish(self, channel: str, payload: str) -> int:
        """Publish ``payload``; return how many subscribers received it."""


class RedisPublisher:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def publish(self, channel: str, payload: str) -> int:
        return int(self._client.publish(channel, payload))

    def close(self) -> None:
        self._client.close()


class MemoryPublisher:
    """In-process publisher for the embedded default and unit tests."""

    def __init__(self) -> None:
        self.published: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def publish(self, channel: str, payload: str) -> int:
        with self._lock:
            self.published.append((channel, json.loads(payload)))
        return 0


class InAppProvider(Provider):
    name = "in_app"
    channel = Channel.IN_APP
    #: A PUBLISH to the local Redis: handing it to another thread costs more.
    concurrent_sends = False

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def send(self, message: OutgoingMessage) -> Receipt:
        payload = notification_message(
            notification_id=message.notification_id,
            title=message.title,
            message=message.body,
            action_url=message.action_url,
            action_label=message.action_label,
            data=message.data,
        )
        channel = user_channel(message.to)
        try:
            receivers = self.publisher.publish(channel, payload)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise RetryableError(
                f"publishing to the real-time channel failed: {type(exc).__name__}",
                provider=self.name,
            ) from exc
        return Receipt(
            provider=self.name,
            provider_message_id=str(message.notification_id),
            response={"channel": channel, "receivers": receivers},
            delivered=True,
        )

    def close(self) -> None:
        close = getattr(self.publisher, "close", None)
        if close is not None:
            close()
