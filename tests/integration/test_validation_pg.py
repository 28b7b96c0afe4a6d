"""Bad input to ``notify`` and ``publish_event`` never reaches PostgreSQL as a DataError.

Property-based: NUL bytes, lone surrogates, huge values and wrong types in
every text and JSON argument either make a row PostgreSQL accepts or raise
``ValidationError`` naming an argument of the call. Each example runs in a
transaction that is rolled back, so nothing is published or kept.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from testdb import REDIS_URL

import clarion
from clarion.api import NotifyRequest
from clarion.core.errors import ValidationError
from realtime.outbox import EventSpec, Outlet, record_event

pytestmark = pytest.mark.postgres

SETTINGS = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

BAD_CHARS = st.sampled_from(["\x00", "\ud800", "\udfff"])
nasty_text = st.lists(st.one_of(st.characters(), BAD_CHARS), min_size=1, max_size=20).map("".join)
huge_text = st.sampled_from(["x" * 200_000, "ê" * 5000])
wrong_type = st.one_of(
    st.none(), st.integers(), st.floats(), st.binary(max_size=5), st.builds(object)
)
text_arg = st.one_of(nasty_text, huge_text, wrong_type)
json_arg = st.recursive(
    st.one_of(nasty_text, st.integers(), st.floats(), st.none(), st.builds(object)),
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.one_of(nasty_text, st.integers()), c)
    ),
    max_leaves=8,
)
NOTIFY_FIELDS = {f.name for f in dataclasses.fields(NotifyRequest)}
EVENT_FIELDS = {f.name for f in dataclasses.fields(EventSpec)}


def _valid_notify() -> dict[str, Any]:
    return {
        "title": "Outbid",
        "message": "Someone bid higher",
        "category": "bid",
        "channels": ["in_app", "sms", "push", "email", "webhook"],
    }


@SETTINGS
@given(
    name=st.sampled_from(
        [
            "title",
            "message",
            "action_url",
            "action_label",
            "idempotency_key",
            "template_data",
            "rich_content",
            "tags",
            "metadata",
            "category",
            "auction_id",
            "template",
        ]
    ),
    value=st.one_of(text_arg, json_arg),
)
def test_notify_refuses_bad_input_before_postgres(clean_db: Engine, name: str, value: Any) -> None:
    arguments = _valid_notify()
    arguments[name] = value
    if name == "template":
        arguments.pop("title")
        arguments.pop("message")
    with Session(clean_db) as session, session.begin():
        try:
            row = clarion.notify(uuid.uuid4(), session=session, **arguments)
        except ValidationError as exc:
            assert exc.field in NOTIFY_FIELDS
        except clarion.NotFoundError:
            assert name == "template"
        else:
            assert row.notification_id is not None
        session.rollback()


@pytest.mark.parametrize(
    ("arguments", "field", "fragment"),
    [
        ({"title": "a\x00b"}, "title", "NUL character"),
        ({"message": "bid \ud800"}, "message", "lone surrogate"),
        ({"metadata": {"k": ["ok", "x\x00"]}}, "metadata", 'at ["k"][1]: contains a NUL'),
        ({"rich_content": {"\x00": 1}}, "rich_content", "key '\\x00' contains a NUL"),
        ({"tags": ["a\udc00"]}, "tags", "at [0]: contains a lone surrogate"),
        ({"action_label": "Bid\x00"}, "action_label", "NUL"),
        ({"idempotency_key": "k\x00"}, "idempotency_key", "NUL"),
        ({"message": "x" * 100_001}, "message", "the limit is 100000"),
        ({"metadata": {"blob": "x" * 20_000}}, "metadata", "the limit is 16384"),
        ({"channels": ["sms"], "message": "ê" * 700}, "message", "channel sms"),
        ({"channels": ["push"], "message": "x" * 5000}, "message", "channel push"),
        ({"channels": ["webhook"], "message": "\U0001f600" * 90_000}, "message", "channel webhook"),
    ],
)
def test_notify_names_the_argument_and_stores_nothing(
    session: Session, clean_db: Engine, arguments: dict[str, Any], field: str, fragment: str
) -> None:
    call = {**_valid_notify(), "channels": ["in_app"], **arguments}
    with pytest.raises(ValidationError) as caught:
        clarion.notify(uuid.uuid4(), session=session, **call)
    assert caught.value.field == field
    assert fragment in caught.value.problem
    session.rollback()
    with clean_db.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM notifications").scalar_one() == 0


def test_template_data_with_nul_is_named_before_rendering(session: Session) -> None:
    with pytest.raises(ValidationError) as caught:
        clarion.notify(
            uuid.uuid4(),
            template="english/outbid",
            template_data={"amount": "$1\x00"},
            session=session,
        )
    assert caught.value.field == "template_data"
    assert caught.value.problem.startswith('at ["amount"]')


def test_a_long_message_fits_the_channels_that_carry_it(session: Session, clean_db: Engine) -> None:
    row = clarion.notify(
        uuid.uuid4(),
        **{**_valid_notify(), "channels": ["in_app", "email"], "message": "x" * 100_000},
        session=session,
    )
    session.commit()
    assert len(row.message) == 100_000


@pytest.fixture
def outlet() -> Outlet:
    # Never used to publish: every example's transaction is rolled back.
    return Outlet(redis.Redis.from_url(REDIS_URL), "clarion:events:test-validation")


@SETTINGS
@given(
    name=st.sampled_from(
        [
            "event_type",
            "event_data",
            "event_metadata",
            "expected_impacts",
            "tags",
            "broadcast_channels",
            "correlation_id",
            "retention_policy",
            "causal_events",
            "target_audience",
            "ack_timeout",
            "expires_at",
        ]
    ),
    value=st.one_of(
        text_arg,
        json_arg,
        st.lists(text_arg, max_size=3),
        st.integers(min_value=2**31),
        st.datetimes(),
    ),
)
def test_publish_event_refuses_bad_input_before_postgres(
    clean_db: Engine, outlet: Outlet, name: str, value: Any
) -> None:
    arguments: dict[str, Any] = {"event_type": "bid_placed", "event_data": {"amount": 10}}
    arguments[name] = value
    with Session(clean_db) as session, session.begin():
        try:
            row = record_event(session, EventSpec(**arguments), outlet)
        except ValidationError as exc:
            assert exc.field in EVENT_FIELDS
        else:
            assert row.sequence_number > 0
        session.rollback()


@pytest.mark.parametrize(
    ("arguments", "field", "fragment"),
    [
        ({"event_type": "bid\x00"}, "event_type", "NUL"),
        ({"event_data": {"a": {"b": "\ud800"}}}, "event_data", 'at ["a"]["b"]: contains a lone'),
        ({"event_metadata": ["\x00"]}, "event_metadata", "at [0]: contains a NUL"),
        ({"broadcast_channels": ["bid\x00"]}, "broadcast_channels", "NUL"),
        ({"correlation_id": "c\x00"}, "correlation_id", "NUL"),
        ({"ack_timeout": 2**40}, "ack_timeout", "between 1 and"),
        ({"expires_at": "tomorrow"}, "expires_at", "expected a datetime"),
        ({"causal_events": 5}, "causal_events", "expected a list"),
        ({"event_data": {"blob": "x" * 70_000}}, "event_data", "the limit is 65536"),
    ],
)
def test_publish_event_names_the_argument(
    session: Session, outlet: Outlet, arguments: dict[str, Any], field: str, fragment: str
) -> None:
    call: dict[str, Any] = {"event_type": "bid_placed", "event_data": {"amount": 10}, **arguments}
    with pytest.raises(ValidationError) as caught:
        record_event(session, EventSpec(**call), outlet)
    assert caught.value.field == field
    assert fragment in caught.value.problem
    session.rollback()


def test_an_aware_expiry_in_any_zone_is_stored(session: Session, outlet: Outlet) -> None:
    zone = dt.timezone(dt.timedelta(hours=-5))
    row = record_event(
        session,
        EventSpec("bid_placed", {"amount": 1}, expires_at=dt.datetime(2100, 1, 1, tzinfo=zone)),
        outlet,
    )
    assert row.expires_at is not None
    session.rollback()
