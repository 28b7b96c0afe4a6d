"""``clarion dlq`` options: Filters.parse and parse_when, and the errors they name."""

from __future__ import annotations

import datetime as dt

import pytest

from clarion.core.errors import ValidationError
from clarion.operators.dlq import Filters, parse_when
from models.enums import Channel

NOW = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)


def test_no_options_is_an_empty_filter_over_every_queue() -> None:
    filters = Filters.parse()
    assert filters == Filters()
    assert filters.empty
    assert filters.queues() == [
        "email",
        "email_urgent",
        "sms",
        "sms_urgent",
        "push",
        "push_urgent",
        "in_app",
        "in_app_urgent",
        "webhook",
        "webhook_urgent",
    ]


def test_empty_strings_mean_not_given() -> None:
    assert Filters.parse(channel="", queue="", since="", until="", error="", limit="") == Filters()


def test_channel_selects_its_two_queues() -> None:
    filters = Filters.parse(channel="sms")
    assert filters.channel is Channel.SMS
    assert filters.queues() == ["sms", "sms_urgent"]
    assert not filters.empty


def test_queue_selects_one_queue() -> None:
    filters = Filters.parse(queue="email_urgent")
    assert filters.queue == "email_urgent"
    assert filters.queues() == ["email_urgent"]
    assert Filters.parse(channel="email", queue="email_urgent").queues() == ["email_urgent"]


def test_error_and_limit_are_kept() -> None:
    filters = Filters.parse(error="MessageRejected", limit="25")
    assert filters.error == "MessageRejected"
    assert filters.limit == 25
    assert Filters.parse(limit=3).limit == 3
    # A limit alone does not narrow which dead letters match.
    assert Filters.parse(limit="5").empty


def test_since_and_until_are_parsed() -> None:
    filters = Filters.parse(since="2024-05-01T10:00:00Z", until="2024-05-01T13:30:00+02:00")
    assert filters.since == dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
    assert filters.until == dt.datetime(2024, 5, 1, 11, 30, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("options", "field", "problem"),
    [
        (
            {"channel": "pigeon"},
            "--channel",
            "unknown value 'pigeon'; expected one of email, sms, push, in_app, webhook",
        ),
        (
            {"queue": "default"},
            "--queue",
            "unknown queue 'default'; one of email, email_urgent, sms, sms_urgent, push, "
            "push_urgent, in_app, in_app_urgent, webhook, webhook_urgent",
        ),
        ({"channel": "sms", "queue": "email"}, "--queue", "queue 'email' is not a sms queue"),
        ({"limit": "0"}, "--limit", "must be a whole number above 0, got '0'"),
        ({"limit": "-3"}, "--limit", "must be a whole number above 0, got '-3'"),
        ({"limit": "ten"}, "--limit", "must be a whole number above 0, got 'ten'"),
        ({"limit": 0}, "--limit", "must be a whole number above 0, got 0"),
        (
            {"since": "yesterday"},
            "--since",
            "expected ISO 8601 (2024-05-01T12:00:00Z) or an age like 30m, 1h, 2d; got 'yesterday'",
        ),
        (
            {"until": "5 minutes"},
            "--until",
            "expected ISO 8601 (2024-05-01T12:00:00Z) or an age like 30m, 1h, 2d; got '5 minutes'",
        ),
        (
            {"since": "2024-05-02T00:00:00Z", "until": "2024-05-01T00:00:00Z"},
            "--since",
            "is later than --until",
        ),
    ],
)
def test_bad_options_name_the_option(options: dict[str, object], field: str, problem: str) -> None:
    with pytest.raises(ValidationError) as info:
        Filters.parse(**options)  # type: ignore[arg-type]
    assert info.value.field == field
    assert info.value.problem == problem
    assert str(info.value) == f"{field}: {problem}"


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("30s", dt.timedelta(seconds=30)),
        ("30m", dt.timedelta(minutes=30)),
        ("1h30m", dt.timedelta(hours=1, minutes=30)),
        ("2d", dt.timedelta(days=2)),
        ("1w", dt.timedelta(weeks=1)),
        ("1.5h", dt.timedelta(minutes=90)),
        (" 45m ", dt.timedelta(minutes=45)),
    ],
)
def test_parse_when_reads_a_relative_age(text: str, age: dt.timedelta) -> None:
    assert parse_when(text, field="--since", now=NOW) == NOW - age


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2024-04-30T08:15:00Z", dt.datetime(2024, 4, 30, 8, 15, tzinfo=dt.UTC)),
        # Naive means UTC.
        ("2024-04-30T08:15:00", dt.datetime(2024, 4, 30, 8, 15, tzinfo=dt.UTC)),
        ("2024-04-30", dt.datetime(2024, 4, 30, tzinfo=dt.UTC)),
        (
            "2024-04-30T10:15:00+02:00",
            dt.datetime(2024, 4, 30, 10, 15, tzinfo=dt.timezone(dt.timedelta(hours=2))),
        ),
    ],
)
def test_parse_when_reads_iso_8601(text: str, when: dt.datetime) -> None:
    parsed = parse_when(text, field="--since", now=NOW)
    assert parsed == when
    assert parsed.tzinfo is not None


@pytest.mark.parametrize("text", ["30", "m", "1h 30m", "-5m", "30x", "soon"])
def test_parse_when_refuses_other_text(text: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_when(text, field="--until", now=NOW)
    assert info.value.field == "--until"
    assert repr(text) in info.value.problem
