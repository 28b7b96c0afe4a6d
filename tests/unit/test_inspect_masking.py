"""``clarion inspect`` masks addresses and the addresses inside error texts."""

from __future__ import annotations

import uuid

import pytest

from clarion.core.errors import ValidationError
from clarion.operators.inspect import (
    mask_address,
    mask_email,
    mask_phone,
    mask_text,
    mask_token,
    mask_url,
    parse_id,
)


@pytest.mark.parametrize(
    ("address", "masked"),
    [
        ("bidder@example.com", "b***@example.com"),
        ("a@b.io", "a***@b.io"),
        ("first.last+tag@mail.example.co.uk", "f***@mail.example.co.uk"),
        # Not an e-mail address after all: masked as an opaque token.
        ("no-at-sign-here", "no-a...here"),
    ],
)
def test_mask_email(address: str, masked: str) -> None:
    assert mask_email(address) == masked


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("+14155550101", "+1415*****01"),
        ("+447700900123", "+4477******23"),
        ("+1234567", "+1234*67"),
        ("+123456", "+1*****"),
        ("12", "12"),
    ],
)
def test_mask_phone(number: str, masked: str) -> None:
    assert mask_phone(number) == masked


@pytest.mark.parametrize(
    ("token", "masked"),
    [
        ("fcm-token-0123456789abcdef", "fcm-...cdef"),
        ("12345678", "********"),
        ("123456789", "1234...6789"),
        ("", ""),
    ],
)
def test_mask_token(token: str, masked: str) -> None:
    assert mask_token(token) == masked


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("https://hooks.example.com/u/42?token=s3cret", "https://hooks.example.com/***"),
        ("https://user:pa55word@hooks.example.com/x", "https://hooks.example.com/***"),
        ("http://127.0.0.1:8080/hooks/abc", "http://127.0.0.1:8080/***"),
        ("https://hooks.example.com", "https://hooks.example.com/***"),
        ("not a url at all", "not ... all"),
    ],
)
def test_mask_url_keeps_only_scheme_and_host(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    for secret in ("s3cret", "pa55word", "user", "/u/42", "/hooks/abc"):
        if secret in url:
            assert secret not in mask_url(url)


@pytest.mark.parametrize(
    ("channel", "address", "masked"),
    [
        ("email", "bidder@example.com", "b***@example.com"),
        ("sms", "+14155550101", "+1415*****01"),
        ("webhook", "https://hooks.example.com/u/42", "https://hooks.example.com/***"),
        ("push", "fcm-token-0123456789abcdef", "fcm-...cdef"),
        ("in_app", "user-channel-0123", "user...0123"),
    ],
)
def test_mask_address_by_channel(channel: str, address: str, masked: str) -> None:
    assert mask_address(channel, address) == masked


def test_mask_text_masks_addresses_inside_errors() -> None:
    error = (
        "MessageRejected: Email address is not verified: bidder@example.com; "
        "Twilio 21211: invalid 'To' number +14155550101, retry later"
    )
    assert mask_text(error) == (
        "MessageRejected: Email address is not verified: b***@example.com; "
        "Twilio 21211: invalid 'To' number +1415*****01, retry later"
    )


def test_mask_text_masks_every_occurrence() -> None:
    masked = mask_text("to a.b@example.com and cc@example.org, +33612345678 / +33612345679")
    assert masked == "to a***@example.com and c***@example.org, +3361*****78 / +3361*****79"


def test_mask_text_leaves_text_without_addresses() -> None:
    text = "HTTP 503 from provider after 5.0 s (attempt 2 of 3) #12345678"
    assert mask_text(text) == text
    assert mask_text("") == ""
    assert mask_text(None) is None


def test_parse_id() -> None:
    value = uuid.uuid4()
    assert parse_id(str(value)) == value
    with pytest.raises(ValidationError) as info:
        parse_id("42")
    assert info.value.field == "NOTIFICATION_ID"
    assert info.value.problem == "must be a UUID, got '42'"
