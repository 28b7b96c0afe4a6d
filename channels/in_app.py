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
from collections.abc import Sequence
from typing import Any, Protocol

import redis

from channels.base import ChannelError, OutgoingMessage, Provider, Receipt, RetryableError
from models.enums import Channel
from realtime.wire import notification_message, user_channel


class Publisher(Protocol):
    def publish(self, channel: str, payload: str) -> int:
        """Publish ``payload``; return how many subscribers received it."""

    def publish_many(self, items: Sequence[tuple[str, str]]) -> list[int]:
        """Publish each ``(channel, payload)`` in order; the receivers of each."""


class RedisPublisher:
    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )

    def publish(self, channel: str, payload: str) -> int:
        return int(self._client.publish(channel, payload))

    def publish_many(self, items: Sequence[tuple[str, str]]) -> list[int]:
        # One round trip for a batch's deliveries (no MULTI: each PUBLISH
        # stands alone, and a pipeline keeps their order).
        with self._client.pipeline(transaction=False) as pipe:
            for channel, payload in items:
                pipe.publish(channel, payload)
            return [int(n) for n in pipe.execute()]

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

    def publish_many(self, items: Sequence[tuple[str, str]]) -> list[int]:
        return [self.publish(channel, payload) for channel, payload in items]


class InAppProvider(Provider):
    name = "in_app"
    channel = Channel.IN_APP
    #: A PUBLISH to the local Redis: handing it to another thread costs more.
    concurrent_sends = False

    def __init__(self, publisher: Publisher) -> None:
        self.publisher = publisher

    def send(self, message: OutgoingMessage) -> Receipt:
        return self._outcome(self.send_many([message])[0])

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[Receipt | ChannelError]:
        """Publish several notifications in one round trip; each one's receipt or error."""
        items = [
            (
                user_channel(m.to),
                notification_message(
                    notification_id=m.notification_id,
                    title=m.title,
                    message=m.body,
                    action_url=m.action_url,
                    action_label=m.action_label,
                    data=m.data,
                ),
            )
            for m in messages
        ]
        try:
            receivers = self.publisher.publish_many(items)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            error = RetryableError(
                f"publishing to the real-time channel failed: {type(exc).__name__}",
                provider=self.name,
            )
            return [error] * len(messages)
        return [
            Receipt(
                provider=self.name,
                provider_message_id=str(m.notification_id),
                response={"channel": channel, "receivers": n},
                delivered=True,
            )
            for m, (channel, _), n in zip(messages, items, receivers, strict=True)
        ]

    @staticmethod
    def _outcome(result: Receipt | ChannelError) -> Receipt:
        if isinstance(result, ChannelError):
            raise result
        return result

    def close(self) -> None:
        close = getattr(self.publisher, "close", None)
        if close is not None:
            close()
