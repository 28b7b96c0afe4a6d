"""Address checks made before any provider call."""

from __future__ import annotations

import re

from models.enums import Channel

# Deliberately simple: one @, no spaces, a dotted domain. Providers do the
# real validation; this catches typos and injection before a request is made.
_EMAIL = re.compile(
    r"^[^@\s\"<>,;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")


def is_valid_email(address: str) -> bool:
    return len(address) <= 254 and _EMAIL.match(address) is not None


def is_valid_e164(number: str) -> bool:
    return _E164.match(number) is not None


def address_problem(channel: Channel, address: str) -> str | None:
    """Why ``address`` cannot be used on ``channel``, or None if it can."""
    if channel is Channel.EMAIL and not is_valid_email(address):
        return "not a valid email address"
    if channel is Channel.SMS and not is_valid_e164(address):
        return "not an E.164 phone number (+ then up to 15 digits)"
    if channel is Channel.WEBHOOK and not address.startswith(("https://", "http://")):
        return "not an http(s) URL"
    if channel is Channel.PUSH and not address.strip():
        return "empty device token"
    return None
