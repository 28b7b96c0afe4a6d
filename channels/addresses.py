"""Addresses: the checks made before any provider call, and finding them in free text.

The shapes of an address are written here once: the worker checks a row's
address with them, the adapters redact what providers quote back, and the
operators' commands mask what they print.
"""

from __future__ import annotations

import re

from models.enums import Channel

# Deliberately simple: one @, no spaces, a dotted domain. Providers do the
# real validation; this catches typos and injection before a request is made.
_EMAIL = re.compile(
    r"^[^@\s\"<>,;]{1,64}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,62}[A-Za-z0-9])?)+$"
)
_E164 = re.compile(r"^\+[1-9]\d{1,14}$")

# What cannot be part of an address quoted in free text: whitespace, quotes,
# brackets and the separators that surround addresses in provider messages.
_NOT_IN_TEXT_ADDRESS = r"[^\s<>\"',;:()\[\]]"
#: An email address inside free text (a provider's error, a traceback), with
#: its ``local`` part and ``domain`` as groups. Broad on purpose: it is used
#: to hide addresses, so it errs towards finding too much, not too little.
EMAIL_IN_TEXT = re.compile(
    rf"(?P<local>{_NOT_IN_TEXT_ADDRESS}+)@(?P<domain>{_NOT_IN_TEXT_ADDRESS}+)"
)


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
