"""Who sees which event, which subscriptions it reaches, and what a client receives: pure rules."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from models.enums import Visibility
from realtime.visibility import (
    ANONYMOUS,
    EventView,
    Viewer,
    auction_key,
    can_see,
    client_frame,
    subscription_keys,
)

ALICE = "11111111-1111-1111-1111-111111111111"
BOB = "22222222-2222-2222-2222-222222222222"
AUCTION = "33333333-3333-3333-3333-333333333333"

alice = Viewer(ALICE, True)
bob = Viewer(BOB, True)
anonymous = Viewer(ANONYMOUS, False)


def payload(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "event_id": "44444444-4444-4444-4444-444444444444",
        "seq": 7,
        "event_type": "bid_placed",
        "category": "bid",
        "auction_id": None,
        "user_id": None,
        "bid_id": "55555555-5555-5555-5555-555555555555",
        "item_id": None,
        "data": {"amount": 120},
        "metadata": {"internal": "routing"},
        "priority": "normal",
        "visibility": "public",
        "target_audience": None,
        "channels": ["bid"],
        "previous_event_id": None,
        "correlation_id": "c-1",
        "causal_events": None,
        "generated_at": "2026-01-01T00:00:00+00:00",
        "expires_at": None,
        "ack_required": False,
        "ack_timeout": 30,
    }
    base.update(overrides)
    return base


def event(**overrides: Any) -> EventView:
    return EventView.from_payload(payload(**overrides))


NOW = time.time()


def test_public_event_is_seen_by_everyone_including_anonymous() -> None:
    e = event()
    assert [can_see(e, v, NOW) for v in (alice, bob, anonymous)] == [True, True, True]


def test_authenticated_event_needs_a_token() -> None:
    e = event(visibility="authenticated")
    assert [can_see(e, v, NOW) for v in (alice, bob, anonymous)] == [True, True, False]


def test_private_event_is_seen_only_by_its_user() -> None:
    e = event(visibility="private", user_id=ALICE)
    assert [can_see(e, v, NOW) for v in (alice, bob, anonymous)] == [True, False, False]


def test_private_event_without_a_user_is_nobodys() -> None:
    e = event(visibility="private", user_id=None)
    assert not can_see(e, alice, NOW)


def test_anonymous_viewer_never_sees_a_private_event_of_the_anonymous_id() -> None:
    e = event(visibility="private", user_id=ANONYMOUS)
    assert not can_see(e, anonymous, NOW)


def test_targeted_event_is_seen_only_by_its_audience() -> None:
    e = event(visibility="targeted", target_audience=[BOB])
    assert [can_see(e, v, NOW) for v in (alice, bob, anonymous)] == [False, True, False]


def test_targeted_audience_is_not_enough_without_a_token() -> None:
    e = event(visibility="targeted", target_audience=[ANONYMOUS])
    assert not can_see(e, anonymous, NOW)


@pytest.mark.parametrize("visibility", list(Visibility))
def test_an_expired_event_is_seen_by_nobody(visibility: Visibility) -> None:
    e = event(
        visibility=visibility.value,
        user_id=ALICE,
        target_audience=[ALICE],
        expires_at="2026-01-01T00:00:10+00:00",
    )
    expiry = e.expires_at
    assert expiry is not None
    assert can_see(e, alice, expiry - 1)
    assert not can_see(e, alice, expiry)
    assert not can_see(e, alice, expiry + 1)


def test_from_payload_reads_routing_fields() -> None:
    e = event(
        auction_id=AUCTION,
        visibility="targeted",
        target_audience=[ALICE, BOB],
        channels=["bid", "price"],
        expires_at="2026-01-01T00:01:00+00:00",
        ack_required=True,
        ack_timeout=None,
    )
    assert e.seq == 7
    assert e.auction_id == AUCTION
    assert e.visibility is Visibility.TARGETED
    assert e.audience == frozenset({ALICE, BOB})
    assert e.channels == ("bid", "price")
    assert e.expires_at == 1767225660.0
    assert e.ack_required is True
    assert e.ack_timeout == 30.0  # missing timeout: the default


def test_from_payload_rejects_an_unknown_visibility() -> None:
    with pytest.raises(ValueError):
        event(visibility="friends")


def test_subscription_keys_are_the_auction_then_the_topics() -> None:
    assert list(subscription_keys(event(auction_id=AUCTION, channels=["bid", "price"]))) == [
        f"auction:{AUCTION}",
        "bid",
        "price",
    ]
    assert list(subscription_keys(event(channels=["system"]))) == ["system"]
    assert list(subscription_keys(event(channels=None))) == []


def test_auction_key() -> None:
    assert auction_key(AUCTION) == f"auction:{AUCTION}"


def test_client_frame_keeps_what_clients_need_and_drops_routing_secrets() -> None:
    frame = client_frame(
        payload(visibility="targeted", target_audience=[ALICE, BOB], user_id=ALICE)
    )
    assert frame == {
        "type": "event",
        "seq": 7,
        "event_id": "44444444-4444-4444-4444-444444444444",
        "event_type": "bid_placed",
        "category": "bid",
        "priority": "normal",
        "visibility": "targeted",
        "auction_id": None,
        "bid_id": "55555555-5555-5555-5555-555555555555",
        "item_id": None,
        "correlation_id": "c-1",
        "previous_event_id": None,
        "channels": ["bid"],
        "generated_at": "2026-01-01T00:00:00+00:00",
        "ack_required": False,
        "data": {"amount": 120},
    }
    for secret in ("target_audience", "user_id", "metadata", "causal_events"):
        assert secret not in frame


def test_client_frame_takes_extra_fields() -> None:
    assert client_frame(payload(), attempt=2)["attempt"] == 2


def test_event_view_frame_is_the_client_frame_serialised_once() -> None:
    e = event(auction_id=AUCTION)
    assert json.loads(e.frame) == client_frame(payload(auction_id=AUCTION))
    assert " " not in e.frame  # compact separators
