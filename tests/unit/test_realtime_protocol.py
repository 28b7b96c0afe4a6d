"""Parsing client frames: every command kind, and every refusal with its error code."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from clarion.core.parse import shown
from realtime.protocol import (
    MAX_SUBSCRIPTIONS,
    MAX_TOPIC_LENGTH,
    Ack,
    Ping,
    ProtocolError,
    Refresh,
    Report,
    Subscribe,
    Unsubscribe,
    dumps,
    parse,
)

AUCTION = "33333333-3333-3333-3333-333333333333"
NOTIFICATION = "66666666-6666-6666-6666-666666666666"


def frame(**fields: Any) -> str:
    return json.dumps(fields)


def refusal(message: str | bytes) -> tuple[str, str]:
    with pytest.raises(ProtocolError) as caught:
        parse(message)
    return caught.value.code, caught.value.detail


def test_subscribe_with_topics_auctions_and_resume() -> None:
    command = parse(
        frame(
            type="subscribe",
            topics=["bid", "system"],
            auctions=[AUCTION.upper()],
            last_seq={f"auction:{AUCTION.upper()}": 41, "bid": 0},
        )
    )
    assert command == Subscribe(
        topics=("bid", "system"),
        auctions=(AUCTION,),  # normalised
        last_seq={f"auction:{AUCTION}": 41, "bid": 0},
    )


def test_subscribe_defaults_to_nothing() -> None:
    assert parse(frame(type="subscribe")) == Subscribe((), (), {})
    assert parse(frame(type="subscribe", last_seq=None)) == Subscribe((), (), {})


def test_unsubscribe() -> None:
    assert parse(frame(type="unsubscribe", topics=["bid"], auctions=[AUCTION])) == Unsubscribe(
        ("bid",), (AUCTION,)
    )


def test_ack_normalises_the_event_id() -> None:
    event_id = uuid.uuid4()
    assert parse(frame(type="ack", event_id=str(event_id).upper())) == Ack(str(event_id))


@pytest.mark.parametrize(("kind", "clicked"), [("read", False), ("click", True)])
def test_read_and_click_reports(kind: str, clicked: bool) -> None:
    assert parse(frame(type=kind, notification_id=NOTIFICATION)) == Report(
        uuid.UUID(NOTIFICATION), clicked
    )


def test_refresh_and_ping() -> None:
    assert parse(frame(type="refresh", token="a.b.c")) == Refresh("a.b.c")
    assert parse(frame(type="ping")) == Ping()
    assert parse(frame(type="ping").encode().decode()) == Ping()


@pytest.mark.parametrize(
    ("message", "code", "detail"),
    [
        (b'{"type": "ping"}', "bad_frame", "binary frames are not accepted; send JSON text"),
        ("{not json", "bad_frame", "not JSON"),
        ("[1, 2]", "bad_frame", "a frame is a JSON object"),
        ('"ping"', "bad_frame", "a frame is a JSON object"),
        (frame(type="dance"), "unknown_type", "unknown frame type 'dance'"),
        (frame(kind="ping"), "unknown_type", "unknown frame type None"),
        (frame(type="subscribe", topics="bid"), "bad_frame", "topics must be a list"),
        (frame(type="subscribe", auctions=AUCTION), "bad_frame", "auctions must be a list"),
        (frame(type="unsubscribe", topics={"bid": 1}), "bad_frame", "topics must be a list"),
        (frame(type="subscribe", topics=[""]), "bad_topic", "bad topic ''"),
        (frame(type="subscribe", topics=[7]), "bad_topic", "bad topic 7"),
        (
            frame(type="subscribe", topics=[f"auction:{AUCTION}"]),
            "bad_topic",
            f"bad topic 'auction:{AUCTION}'",
        ),
        (
            frame(type="subscribe", topics=["x" * (MAX_TOPIC_LENGTH + 1)]),
            "bad_topic",
            # A long value is quoted cut short.
            f"bad topic {shown('x' * (MAX_TOPIC_LENGTH + 1))}",
        ),
        (frame(type="subscribe", auctions=["nope"]), "bad_frame", "auctions must be a UUID"),
        (frame(type="unsubscribe", auctions=[None]), "bad_frame", "auctions must be a UUID"),
        (
            frame(type="subscribe", last_seq=[1]),
            "bad_frame",
            "last_seq maps subscriptions to sequence numbers",
        ),
        (
            frame(type="subscribe", last_seq={"bid": -1}),
            "bad_frame",
            f"last_seq['bid'] must be an integer from 0 to {2**63 - 1}",
        ),
        (
            frame(type="subscribe", last_seq={"bid": "4"}),
            "bad_frame",
            f"last_seq['bid'] must be an integer from 0 to {2**63 - 1}",
        ),
        (
            frame(type="subscribe", last_seq={"bid": True}),
            "bad_frame",
            f"last_seq['bid'] must be an integer from 0 to {2**63 - 1}",
        ),
        (
            frame(type="subscribe", last_seq={"auction:nope": 3}),
            "bad_frame",
            "last_seq must be a UUID",
        ),
        (frame(type="ack"), "bad_frame", "event_id must be a UUID"),
        (frame(type="ack", event_id="e-1"), "bad_frame", "event_id must be a UUID"),
        (frame(type="read"), "bad_frame", "notification_id must be a UUID"),
        (frame(type="click", notification_id=5), "bad_frame", "notification_id must be a UUID"),
        (frame(type="refresh"), "bad_frame", "refresh needs a token"),
        (frame(type="refresh", token=""), "bad_frame", "refresh needs a token"),
        (frame(type="refresh", token=42), "bad_frame", "refresh needs a token"),
    ],
)
def test_refusals_carry_their_error_code(message: str | bytes, code: str, detail: str) -> None:
    assert refusal(message) == (code, detail)


def test_subscription_lists_are_bounded() -> None:
    many_topics = [f"t{i}" for i in range(MAX_SUBSCRIPTIONS + 1)]
    assert refusal(frame(type="subscribe", topics=many_topics)) == (
        "bad_frame",
        "topics must be a list",
    )
    many_auctions = [str(uuid.uuid4()) for _ in range(MAX_SUBSCRIPTIONS + 1)]
    assert refusal(frame(type="subscribe", auctions=many_auctions)) == (
        "bad_frame",
        "auctions must be a list",
    )
    at_limit = parse(frame(type="subscribe", topics=many_topics[:MAX_SUBSCRIPTIONS]))
    assert isinstance(at_limit, Subscribe) and len(at_limit.topics) == MAX_SUBSCRIPTIONS


def test_protocol_error_message_names_code_and_detail() -> None:
    assert str(ProtocolError("bad_topic", "bad topic ''")) == "bad_topic: bad topic ''"


def test_dumps_is_compact_and_stringifies_what_json_cannot() -> None:
    value = uuid.UUID(NOTIFICATION)
    assert dumps({"type": "receipt", "notification_id": value}) == (
        f'{{"type":"receipt","notification_id":"{NOTIFICATION}"}}'
    )
