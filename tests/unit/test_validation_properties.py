"""Property-based tests of the validators that take input from outside.

Each validator, given NUL bytes, lone surrogates, huge values or values of
the wrong type, either returns or raises its documented error naming the
field: never anything else, and never a value PostgreSQL would refuse.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from channels.base import OutgoingMessage
from channels.limits import (
    PUSH_MAX_BYTES,
    SMS_MAX_SEGMENTS,
    overrun,
    sms_segments,
)
from clarion.core.errors import ValidationError
from clarion.core.parse import (
    JSON_MAX_DEPTH,
    as_enum,
    as_enum_list,
    as_json,
    as_text,
    as_uuid,
    shown,
    text_problem,
)
from clarion.operators.dlq import Filters
from models.enums import Channel
from realtime import protocol

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text PostgreSQL refuses: NUL and the lone halves of surrogate pairs.
BAD_CHARS = st.sampled_from(["\x00", "\ud800", "\udbff", "\udc00", "\udfff"])
nasty_text = st.lists(st.one_of(st.characters(), BAD_CHARS), max_size=40).map("".join)
huge_text = st.sampled_from(["x" * 300_000, "é" * 200_000, "\U0001f600" * 100_000])
any_text = st.one_of(nasty_text, huge_text, st.text())
wrong_type = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**400, max_value=10**401),
    st.floats(allow_nan=True, allow_infinity=True),
    st.binary(max_size=20),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=3),
    st.builds(object),
    st.sets(st.integers(), max_size=3),
)
anything = st.one_of(any_text, wrong_type)


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": [value]}
    return value


json_keys = st.one_of(nasty_text, st.integers(), st.none(), st.booleans())
json_like = st.recursive(
    st.one_of(anything, st.just(_deep(JSON_MAX_DEPTH + 5))),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.tuples(children, children),
        st.dictionaries(json_keys, children, max_size=4),
    ),
    max_leaves=12,
)


def _storable(value: Any) -> bool:
    """True if PostgreSQL's UTF-8 text and JSONB can hold every string in ``value``."""
    text = json.dumps(value, ensure_ascii=False)
    return text_problem(text) is None and "\\u0000" not in text


# --- the ground ---------------------------------------------------------------------


@SETTINGS
@given(anything)
def test_as_text_returns_storable_text_or_names_the_field(value: Any) -> None:
    try:
        text = as_text(value, "title", limit=255)
    except ValidationError as exc:
        assert exc.field == "title"
        assert len(str(exc)) < 300, "the error quotes a huge value"
        return
    assert isinstance(text, str) and 0 < len(text) <= 255
    assert "\x00" not in text
    text.encode("utf-8")


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00b", "NUL character (U+0000) at offset 1"),
        ("ab\ud800", "lone surrogate (U+D800) at offset 2"),
    ],
)
def test_as_text_says_what_and_where(value: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=r"^message: ") as caught:
        as_text(value, "message", limit=None)
    assert problem in caught.value.problem


@SETTINGS
@given(json_like)
def test_as_json_returns_storable_json_or_names_the_field(value: Any) -> None:
    try:
        plain = as_json(value, "metadata", limit=64 * 1024)
    except ValidationError as exc:
        assert exc.field == "metadata"
        assert len(str(exc)) < 400, "the error quotes a huge value"
        return
    encoded = json.dumps(plain, separators=(",", ":"), ensure_ascii=False).encode()
    assert len(encoded) <= 64 * 1024
    assert _storable(plain)


def test_as_json_names_the_path_inside_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        as_json({"lots": [{"name": "ok"}, {"name": "bad\x00"}]}, "rich_content", limit=1000)
    assert caught.value.field == "rich_content"
    assert caught.value.problem.startswith('at ["lots"][1]["name"]: contains a NUL')


def test_as_json_refuses_a_key_with_a_surrogate_and_a_cycle() -> None:
    with pytest.raises(ValidationError, match="key '\\\\ud800' contains a lone surrogate"):
        as_json({"\ud800": 1}, "tags", limit=1000)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValidationError, match="nested deeper than"):
        as_json(cycle, "tags", limit=1000)


def test_as_json_limit_is_on_the_serialised_bytes() -> None:
    # é is two bytes in UTF-8: 8 bytes of structure and 20 of text.
    as_json({"a": "é" * 10}, "tags", limit=28)
    with pytest.raises(ValidationError, match="is 28 bytes as JSON; the limit is 27"):
        as_json({"a": "é" * 10}, "tags", limit=27)


@SETTINGS
@given(anything)
def test_as_uuid(value: Any) -> None:
    try:
        result = as_uuid(value, "user_id")
    except ValidationError as exc:
        assert exc.field == "user_id"
        assert len(str(exc)) < 300
        return
    assert isinstance(result, uuid.UUID)


@SETTINGS
@given(st.one_of(anything, st.lists(anything, max_size=4), st.sampled_from(["email", "sms"])))
def test_as_enum_and_as_enum_list(value: Any) -> None:
    try:
        member = as_enum(Channel, value, "channel")
    except ValidationError as exc:
        assert exc.field == "channel" and len(str(exc)) < 300
    else:
        assert isinstance(member, Channel)
    try:
        members = as_enum_list(Channel, value, "channels")
    except ValidationError as exc:
        assert exc.field == "channels" and len(str(exc)) < 300
    else:
        assert members and all(isinstance(m, Channel) for m in members)


def test_shown_cuts_a_huge_value() -> None:
    assert len(shown("x" * 100_000)) < 100


# --- the gateway's protocol ------------------------------------------------------------

frame_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=2**63), nasty_text),
    lambda c: st.one_of(st.lists(c, max_size=3), st.dictionaries(nasty_text, c, max_size=3)),
    max_leaves=8,
)
frames = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(["subscribe", "unsubscribe", "ack", "read", "refresh", "x"])},
        optional={
            "topics": st.one_of(st.lists(nasty_text, max_size=3), frame_values),
            "auctions": st.one_of(st.lists(st.uuids().map(str), max_size=2), frame_values),
            "last_seq": st.one_of(
                st.dictionaries(nasty_text, st.integers(min_value=-5, max_value=2**70)),
                frame_values,
            ),
            "event_id": frame_values,
            "notification_id": frame_values,
            "token": frame_values,
        },
    ),
    frame_values,
)


@SETTINGS
@given(st.one_of(frames.map(json.dumps), nasty_text, st.binary(max_size=10)))
def test_protocol_parse_returns_a_command_or_a_protocol_error(frame: Any) -> None:
    try:
        command = protocol.parse(frame)
    except protocol.ProtocolError as exc:
        assert exc.code in ("bad_frame", "bad_topic", "unknown_type")
        assert len(exc.detail) < 300
        return
    if isinstance(command, protocol.Subscribe | protocol.Unsubscribe):
        # Topics are looked up in PostgreSQL: they must be storable.
        assert all(text_problem(t) is None for t in command.topics)
    if isinstance(command, protocol.Subscribe):
        assert all(0 <= s < 2**63 for s in command.last_seq.values())


def test_protocol_refuses_a_nul_topic_and_a_sequence_past_bigint() -> None:
    with pytest.raises(protocol.ProtocolError) as caught:
        protocol.parse(json.dumps({"type": "subscribe", "topics": ["bid\x00"]}))
    assert caught.value.code == "bad_topic"
    with pytest.raises(protocol.ProtocolError, match="last_seq"):
        protocol.parse(json.dumps({"type": "subscribe", "topics": [], "last_seq": {"bid": 2**63}}))


# --- the operators' dead-letter filters ------------------------------------------------


FILTER_OPTIONS = ("channel", "queue", "since", "until", "error", "limit")
# The command line hands every option over as text.
filter_values = st.one_of(
    any_text,
    st.sampled_from(["sms", "email_urgent", "30m", "2024-05-01T12:00:00Z", "1e400s", "0"]),
)


@SETTINGS
@given(st.dictionaries(st.sampled_from(FILTER_OPTIONS), filter_values, max_size=3))
def test_dlq_filters_parse(options: dict[str, Any]) -> None:
    # One bad option stops the parse: few options per call, so that each is reached.
    try:
        Filters.parse(**options)
    except ValidationError as exc:
        assert exc.field.removeprefix("--") in options


def test_dlq_filters_refuse_an_age_past_the_calendar() -> None:
    with pytest.raises(ValidationError):
        Filters.parse(since="99999999999w")


# --- what each channel can carry -------------------------------------------------------


def _message(channel: Channel, title: str, body: str) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=channel,
        to="",
        title=title,
        body=body,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a" * 160, (1, "GSM-7")),
        ("a" * 161, (2, "GSM-7")),
        ("{" * 80, (1, "GSM-7")),  # extension characters take two septets
        ("{" * 81, (2, "GSM-7")),
        ("é" * 160, (1, "GSM-7")),  # é is in the GSM alphabet
        ("ê" * 70, (1, "UCS-2")),  # ê is not
        ("ê" * 71, (2, "UCS-2")),
        ("\U0001f600" * 35, (1, "UCS-2")),  # two UTF-16 units each
        ("\U0001f600" * 36, (2, "UCS-2")),
        ("a" * 153 * 10, (10, "GSM-7")),
        ("a" * (153 * 10 + 1), (11, "GSM-7")),
    ],
)
def test_sms_segments(text: str, expected: tuple[int, str]) -> None:
    assert sms_segments(text) == expected


def test_overrun_per_channel() -> None:
    body = "ê" * (67 * SMS_MAX_SEGMENTS)
    assert overrun(_message(Channel.SMS, "", body)) is None
    over = overrun(_message(Channel.SMS, "", body + "ê"))
    assert over is not None and (over.size, over.unit) == (11, "UCS-2 segments")

    assert overrun(_message(Channel.PUSH, "t", "x" * 3500)) is None
    over = overrun(_message(Channel.PUSH, "t", "x" * PUSH_MAX_BYTES))
    assert over is not None and over.limit == PUSH_MAX_BYTES

    assert overrun(_message(Channel.WEBHOOK, "t", "x" * 200_000)) is None
    assert overrun(_message(Channel.WEBHOOK, "t", "x" * 300_000)) is not None
    assert overrun(_message(Channel.EMAIL, "t", "x" * 7_000_000)) is None
    assert overrun(_message(Channel.EMAIL, "t", "x" * 8_000_000)) is not None
    assert overrun(_message(Channel.IN_APP, "t", "x" * 8_000_000)) is None
