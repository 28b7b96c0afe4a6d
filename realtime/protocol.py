"""The client protocol: JSON text frames, parsed into typed commands.

Client -> server::

    {"type": "subscribe", "topics": ["bid"], "auctions": ["<uuid>"],
     "last_seq": {"auction:<uuid>": 41, "bid": 40}}        # last_seq optional
    {"type": "unsubscribe", "topics": [...], "auctions": [...]}
    {"type": "ack", "event_id": "<uuid>"}
    {"type": "read", "notification_id": "<uuid>"}
    {"type": "click", "notification_id": "<uuid>"}
    {"type": "refresh", "token": "<jwt>"}
    {"type": "ping"}

Server -> client: ``welcome``, ``subscribed``, ``unsubscribed``, ``event``,
``gap``, ``notification``, ``receipt``, ``refreshed``, ``pong``, ``error``
(see the README, "Real time").
"""

from __future__ import annotations

import dataclasses
import json
import uuid
from typing import Any

from clarion.core.errors import ValidationError
from clarion.core.parse import as_uuid, shown, text_problem

#: Topics, auctions or last_seq entries one frame may list (a connection's own bound is
#: CLARION_GATEWAY_MAX_SUBSCRIPTIONS).
MAX_SUBSCRIPTIONS = 1000
MAX_TOPIC_LENGTH = 200
#: Sequence numbers are PostgreSQL bigints; a larger one would fail the history query.
MAX_SEQ = 2**63 - 1


class ProtocolError(Exception):
    """A client frame that cannot be used; ``code`` goes into the error frame."""

    def __init__(self, code: str, detail: str) -> None:
        self.code = code
        self.detail = detail
        super().__init__(f"{code}: {detail}")


@dataclasses.dataclass(frozen=True, slots=True)
class Subscribe:
    topics: tuple[str, ...]
    auctions: tuple[str, ...]
    last_seq: dict[str, int]


@dataclasses.dataclass(frozen=True, slots=True)
class Unsubscribe:
    topics: tuple[str, ...]
    auctions: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Ack:
    event_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Report:
    """A read or click report for an in-app notification."""

    notification_id: uuid.UUID
    clicked: bool


@dataclasses.dataclass(frozen=True, slots=True)
class Refresh:
    token: str


@dataclasses.dataclass(frozen=True, slots=True)
class Ping:
    pass


Command = Subscribe | Unsubscribe | Ack | Report | Refresh | Ping


def parse(message: str | bytes) -> Command:
    """Parse one client frame; raise :class:`ProtocolError` if it is not valid."""
    if isinstance(message, bytes):
        raise ProtocolError("bad_frame", "binary frames are not accepted; send JSON text")
    try:
        data = json.loads(message)
    except ValueError:
        raise ProtocolError("bad_frame", "not JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_frame", "a frame is a JSON object")
    kind = data.get("type")
    if kind in ("subscribe", "unsubscribe"):
        topics = _topics(data.get("topics", []))
        auctions = _auctions(data.get("auctions", []))
        if kind == "unsubscribe":
            return Unsubscribe(topics, auctions)
        return Subscribe(topics, auctions, _last_seq(data.get("last_seq")))
    if kind == "ack":
        return Ack(str(_uuid(data.get("event_id"), "event_id")))
    if kind in ("read", "click"):
        return Report(_uuid(data.get("notification_id"), "notification_id"), kind == "click")
    if kind == "refresh":
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise ProtocolError("bad_frame", "refresh needs a token")
        return Refresh(token)
    if kind == "ping":
        return Ping()
    raise ProtocolError("unknown_type", f"unknown frame type {kind!r}")


def _topics(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_SUBSCRIPTIONS:
        raise ProtocolError("bad_frame", "topics must be a list")
    for topic in value:
        if (
            not isinstance(topic, str)
            or not topic
            or len(topic) > MAX_TOPIC_LENGTH
            or topic.startswith("auction:")
            # A topic is looked up in the events' JSONB: PostgreSQL refuses NUL there.
            or text_problem(topic) is not None
        ):
            raise ProtocolError("bad_topic", f"bad topic {shown(topic)}")
    return tuple(value)


def _auctions(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) > MAX_SUBSCRIPTIONS:
        raise ProtocolError("bad_frame", "auctions must be a list")
    return tuple(str(_uuid(a, "auctions")) for a in value)


def _last_seq(value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_SUBSCRIPTIONS:
        raise ProtocolError("bad_frame", "last_seq maps subscriptions to sequence numbers")
    result: dict[str, int] = {}
    for key, seq in value.items():
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= MAX_SEQ:
            raise ProtocolError(
                "bad_frame", f"last_seq[{shown(key)}] must be an integer from 0 to {MAX_SEQ}"
            )
        if key.startswith("auction:"):
            key = "auction:" + str(_uuid(key.removeprefix("auction:"), "last_seq"))
        result[key] = seq
    return result


def _uuid(value: Any, field: str) -> uuid.UUID:
    try:
        return as_uuid(value, field)
    except ValidationError:
        raise ProtocolError("bad_frame", f"{field} must be a UUID") from None


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"), default=str)
