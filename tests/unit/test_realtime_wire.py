"""The Redis wire format shared by publishers and gateways, and that it stays a light leaf."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from realtime import wire

USER = "11111111-1111-1111-1111-111111111111"


def test_user_channel_round_trip() -> None:
    assert wire.user_channel(USER) == f"clarion:user:{USER}"
    assert wire.user_of_channel(wire.user_channel(USER)) == USER
    assert wire.user_of_channel(wire.user_channel(USER).encode()) == USER


def test_the_gateway_pattern_matches_every_user_channel() -> None:
    assert wire.USER_CHANNEL_PATTERN == "clarion:user:*"
    assert wire.user_channel(USER).startswith(wire.USER_CHANNEL_PATTERN.rstrip("*"))


def test_notification_message_is_the_client_frame() -> None:
    text = wire.notification_message(
        notification_id=7,
        title="Outbid",
        message="You were outbid",
        action_url="https://example.test/a/1",
        action_label=None,
        data={"auction_id": "a-1"},
    )
    assert json.loads(text) == {
        "type": "notification",
        "notification_id": "7",
        "title": "Outbid",
        "message": "You were outbid",
        "action_url": "https://example.test/a/1",
        "action_label": None,
        "data": {"auction_id": "a-1"},
    }
    assert wire.notification_id_of(text) == "7"


def test_notification_id_of_odd_messages() -> None:
    assert wire.notification_id_of('{"type": "notification"}') is None
    assert wire.notification_id_of('{"notification_id": ""}') is None
    for bad in ("not json", "[1]", '"text"'):
        with pytest.raises(ValueError):
            wire.notification_id_of(bad)


def test_encode_event_is_json() -> None:
    assert json.loads(wire.encode_event({"event_id": "e", "seq": 3})) == {
        "event_id": "e",
        "seq": 3,
    }


def loaded_after(statement: str, prefixes: tuple[str, ...]) -> list[str]:
    code = (
        f"import sys; {statement};"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {prefixes!r}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    loaded: list[str] = json.loads(out.replace("'", '"'))
    return loaded


def test_importing_the_wire_loads_no_gateway_redis_or_database() -> None:
    heavy = ("realtime", "redis", "sqlalchemy", "websockets", "models", "clarion")
    assert loaded_after("import realtime.wire", heavy) == ["realtime", "realtime.wire"]


def test_the_in_app_channel_takes_only_the_wire_from_realtime() -> None:
    assert loaded_after("import channels.in_app", ("realtime",)) == ["realtime", "realtime.wire"]
