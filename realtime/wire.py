"""What travels through Redis between publishers and gateways: channel names and messages.

A leaf module (it imports nothing of Clarion's) so that a delivery channel
(``channels/in_app.py``) can speak to the gateways without loading them.

* Events go to one channel for all gateways, ``CLARION_EVENTS_CHANNEL``
  (default ``clarion:events``); the message is the event payload
  (:func:`realtime.outbox.event_payload`) as JSON, :func:`encode_event`.
* In-app notifications go to the user's own channel, :func:`user_channel`
  (``clarion:user:<user_id>``); every gateway listens on
  :data:`USER_CHANNEL_PATTERN` and forwards the message, as it is, to that
  user's connections: :func:`notification_message` is the client's
  ``notification`` frame, :func:`badge_message` the ``badge`` frame (the
  unread count after the user read or archived something through
  ``clarion web``'s inbox API, so every open app updates its badge).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

USER_CHANNEL_PREFIX = "clarion:user:"
#: The pattern a gateway subscribes to for every user's channel.
USER_CHANNEL_PATTERN = USER_CHANNEL_PREFIX + "*"


def user_channel(user_id: object) -> str:
    """The Redis channel of one user's in-app notifications."""
    return f"{USER_CHANNEL_PREFIX}{user_id}"


def user_of_channel(channel: bytes | str) -> str:
    """The user id a user channel's name ends with."""
    name = channel.decode() if isinstance(channel, bytes) else channel
    return name.rsplit(":", 1)[-1]


def encode_event(payload: Mapping[str, Any]) -> str:
    """The message published on the events channel for one event payload."""
    return json.dumps(payload)


def notification_message(
    *,
    notification_id: object,
    title: str | None,
    message: str | None,
    action_url: str | None,
    action_label: str | None,
    data: Mapping[str, Any],
) -> str:
    """The ``notification`` frame of an in-app notification, as published and as sent."""
    return json.dumps(
        {
            "type": "notification",
            "notification_id": str(notification_id),
            "title": title,
            "message": message,
            "action_url": action_url,
            "action_label": action_label,
            "data": dict(data),
        }
    )


def badge_message(unread: int) -> str:
    """The ``badge`` frame: the user's unread count, sent to all of their connections."""
    return json.dumps({"type": "badge", "unread": int(unread)})


def notification_id_of(text: str) -> str | None:
    """The notification id of a user-channel message (None if it has none).

    Raises :class:`ValueError` if the message is not a JSON object.
    """
    try:
        return str(json.loads(text).get("notification_id") or "") or None
    except AttributeError:
        raise ValueError("a notification message is a JSON object") from None
