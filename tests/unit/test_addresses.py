"""One shape for an email address quoted in free text, used to redact and to mask."""

from __future__ import annotations

import pytest

from channels.addresses import EMAIL_IN_TEXT, is_valid_e164, is_valid_email
from channels.base import redact_emails
from clarion.operators.inspect import mask_text


@pytest.mark.parametrize(
    ("text", "redacted", "masked"),
    [
        (
            "550 <bob@example.com>: no such user",
            "550 <address>: no such user",
            "550 <b***@example.com>: no such user",
        ),
        ("to bidder-7@example.com.", "to <address>", "to b***@example.com."),
        ("a+b@ex.co, c@d.org", "<address>, <address>", "a***@ex.co, c***@d.org"),
        # No dotted domain: still an address to hide.
        ("rcpt root@localhost refused", "rcpt <address> refused", "rcpt r***@localhost refused"),
        ("no address here", "no address here", "no address here"),
    ],
)
def test_redact_and_mask_find_the_same_addresses(text: str, redacted: str, masked: str) -> None:
    assert redact_emails(text) == redacted
    assert mask_text(text) == masked


def test_groups() -> None:
    match = EMAIL_IN_TEXT.search("from: ann.lee@mail.example.org;")
    assert match is not None
    assert (match["local"], match["domain"]) == ("ann.lee", "mail.example.org")


def test_validation_is_stricter_than_finding() -> None:
    assert is_valid_email("ann@example.org")
    assert not is_valid_email("root@localhost")
    assert EMAIL_IN_TEXT.search("root@localhost")
    assert is_valid_e164("+14155550101")
    assert not is_valid_e164("0014155550101")
