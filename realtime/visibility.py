"""Who may see an event: the one rule used for live delivery and for resume alike.

* ``public``        every subscriber, anonymous connections included;
* ``authenticated`` only connections that presented a valid token;
* ``private``       only the connections of the event's ``user_id``;
* ``targeted``      only the users listed in ``target_audience``.

An expired event (``expires_at`` in the past) is never delivered. Whether a
connection is *interested* in an event (its subscriptions) is a separate
question, answered by :func:`subscription_keys`; the gateway delivers an
event to a connection only if both say yes.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Iterable, Mapping
from typing import Any

from models.enums import Visibility

ANONYMOUS = "00000000-0000-0000-0000-000000000000"


@dataclasses.dataclass(frozen=True, slots=True)
class Viewer:
    """The identity of one connection."""

    user_id: str
    authenticated: bool


@dataclasses.dataclass(slots=True)
class EventView:
    """An event as the gateway routes it (built from the published payload or a row)."""

    event_id: str
    seq: int
    auction_id: str | None
    user_id: str | None
    visibility: Visibility
    audience: frozenset[str]
    channels: tuple[str, ...]
    expires_at: float | None  # POSIX seconds
    ack_required: bool
    ack_timeout: float
    payload: dict[str, Any]
    #: The ``event`` frame sent to clients, serialised once for every receiver.
    frame: str = ""
    #: When it reached this gateway live (monotonic seconds; 0.0: read from history)
    arrived: float = 0.0

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> EventView:
        expires = payload.get("expires_at")
        audience = payload.get("target_audience") or []
        view = cls(
            event_id=str(payload["event_id"]),
            seq=int(payload["seq"]),
            auction_id=payload.get("auction_id"),
            user_id=payload.get("user_id"),
            visibility=Visibility(payload["visibility"]),
            audience=frozenset(str(u) for u in audience),
            channels=tuple(payload.get("channels") or ()),
            expires_at=dt.datetime.fromisoformat(expires).timestamp() if expires else None,
            ack_required=bool(payload.get("ack_required")),
            ack_timeout=float(payload.get("ack_timeout") or 30),
            payload=dict(payload),
        )
        view.frame = json.dumps(client_frame(payload), separators=(",", ":"))
        return view


def client_frame(payload: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    """The ``event`` frame for a client: the payload without routing secrets."""
    frame: dict[str, Any] = {
        "type": "event",
        "seq": payload["seq"],
        "event_id": payload["event_id"],
        "event_type": payload["event_type"],
        "category": payload["category"],
        "priority": payload["priority"],
        "visibility": payload["visibility"],
        "auction_id": payload.get("auction_id"),
        "bid_id": payload.get("bid_id"),
        "item_id": payload.get("item_id"),
        "correlation_id": payload.get("correlation_id"),
        "previous_event_id": payload.get("previous_event_id"),
        "channels": payload.get("channels"),
        "generated_at": payload.get("generated_at"),
        "ack_required": payload.get("ack_required", False),
        "data": payload.get("data"),
    }
    frame.update(extra)
    return frame


def can_see(event: EventView, viewer: Viewer, now: float) -> bool:
    """True if ``viewer`` may receive ``event`` at POSIX time ``now``."""
    if event.expires_at is not None and event.expires_at <= now:
        return False
    visibility = event.visibility
    if visibility is Visibility.PUBLIC:
        return True
    if not viewer.authenticated:
        return False
    if visibility is Visibility.AUTHENTICATED:
        return True
    if visibility is Visibility.PRIVATE:
        return event.user_id is not None and event.user_id == viewer.user_id
    if visibility is Visibility.TARGETED:
        return viewer.user_id in event.audience
    return False  # an unknown visibility is nobody's


def auction_key(auction_id: str) -> str:
    return f"auction:{auction_id}"


def subscription_keys(event: EventView) -> Iterable[str]:
    """The subscription keys an event is published under: its auction and its topics."""
    if event.auction_id:
        yield auction_key(event.auction_id)
    yield from event.channels
