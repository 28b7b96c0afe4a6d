"""The application API for ``user_addresses``: where a user is reached per channel.

``add_address`` checks an address the way its channel will use it (email
format, E.164, an FCM token's shape, a webhook endpoint's https URL and
public host, by the rule the webhook channel applies at every send) and
generates a webhook's Standard Webhooks signing secret, returned once.
``disable_address`` and ``list_addresses`` complete the set; the rows are
written by ``models.addresses``. Like :func:`clarion.notify`, each call
joins the caller's transaction when given ``session`` and commits its own
otherwise.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import ipaddress
import re
import secrets
import socket
import urllib.parse
import uuid
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.orm import Session

from channels.addresses import is_valid_e164, is_valid_email
from channels.webhook import SECRET_PREFIX, is_public_address
from clarion.core.clock import as_utc
from clarion.core.db import get_engine, session_factory
from clarion.core.errors import ValidationError
from clarion.core.parse import as_enum, as_uuid
from clarion.core.settings import get_settings
from models import addresses as rows
from models.enums import Channel
from models.notifications import UserAddress

ADDRESS_MAX = 2048
LABEL_MAX = 100
REASON_MAX = 255
# FCM registration tokens are URL-safe base64 with ':' separators, ~150-200
# characters today; the bounds are loose so that a future format still fits.
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:.\-]{8,2048}$")
# Standard Webhooks: whsec_ + base64 of 24 to 64 random bytes.
_SECRET_BYTES = (24, 64)
_GENERATED_SECRET_BYTES = 32

T = TypeVar("T")


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class Address:
    """One row of ``user_addresses`` as the API shows it.

    ``secret`` is set only in what :func:`add_address` returns for a webhook
    (the one time it is shown); it is left out of ``repr`` so that logging an
    ``Address`` cannot leak it. ``has_secret`` says whether one is stored.
    """

    address_id: uuid.UUID
    user_id: uuid.UUID
    channel: Channel
    address: str
    label: str | None
    is_active: bool
    has_secret: bool
    created_at: dt.datetime | None
    disabled_at: dt.datetime | None
    disabled_reason: str | None
    secret: str | None = dataclasses.field(default=None, repr=False)


def _view(row: UserAddress, *, secret: str | None = None) -> Address:
    return Address(
        address_id=row.address_id,
        user_id=row.user_id,
        channel=Channel(row.channel),
        address=row.address,
        label=row.label,
        is_active=row.is_active,
        has_secret=row.secret is not None,
        created_at=as_utc(row.created_at),
        disabled_at=as_utc(row.disabled_at),
        disabled_reason=row.disabled_reason,
        secret=secret,
    )


def _in_session(session: Session | None, work: Callable[[Session], T]) -> T:
    if session is not None:
        return work(session)
    engine = get_engine(get_settings().effective_database_url)
    with session_factory(engine)() as own, own.begin():
        return work(own)


# --- the API ---------------------------------------------------------------------


def add_address(
    user_id: uuid.UUID | str,
    channel: Channel | str,
    address: str,
    *,
    label: str | None = None,
    secret: str | None = None,
    session: Session | None = None,
) -> Address:
    """Register ``address`` for ``user_id`` on ``channel`` and return it.

    For a webhook, ``secret`` is the endpoint's signing secret (``whsec_`` +
    base64); without one a 32-byte secret is generated. Either way the
    returned ``Address.secret`` holds it: give it to the receiver now, as
    Clarion never shows it again. An address that was disabled is enabled
    again (with the new secret and label); one that is active is refused.

    Raises :class:`~clarion.core.errors.ValidationError` naming the first
    invalid argument.
    """
    uid = as_uuid(user_id, "user_id")
    chan = as_enum(Channel, channel, "channel")
    settings = get_settings()
    value = check_address(chan, address, allow_private=settings.webhook_allow_private)
    shown_label = _optional_text("label", label, LABEL_MAX)
    if chan is Channel.WEBHOOK:
        key = _new_secret() if secret is None else check_secret(secret)
    elif secret is not None:
        raise ValidationError("secret", "only webhook addresses have a signing secret")
    else:
        key = None

    def work(s: Session) -> Address:
        row = rows.add(s, user_id=uid, channel=chan, address=value, label=shown_label, secret=key)
        return _view(row, secret=key)

    return _in_session(session, work)


def disable_address(
    address_id: uuid.UUID | str,
    *,
    reason: str = "disabled by the application",
    session: Session | None = None,
) -> Address:
    """Stop delivering to this address (the row stays, for the history).

    Disabling an address that is already disabled changes nothing. Raises
    :class:`~clarion.core.errors.NotFoundError` for an unknown id.
    """
    aid = as_uuid(address_id, "address_id")
    why = _text("reason", reason, REASON_MAX)
    return _in_session(session, lambda s: _view(rows.disable(s, aid, why)))


def list_addresses(
    user_id: uuid.UUID | str,
    *,
    channel: Channel | str | None = None,
    include_disabled: bool = False,
    session: Session | None = None,
) -> list[Address]:
    """The user's addresses (active ones only unless ``include_disabled``), never a secret."""
    uid = as_uuid(user_id, "user_id")
    chosen = None if channel is None else [as_enum(Channel, channel, "channel")]
    return _in_session(
        session,
        lambda s: [
            _view(r)
            for r in rows.list_for(s, uid, channels=chosen, include_disabled=include_disabled)
        ],
    )


# --- validation ------------------------------------------------------------------


def _text(field: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise ValidationError(field, "must not be empty")
    if len(value) > limit:
        raise ValidationError(field, f"is {len(value)} characters long; the limit is {limit}")
    if "\x00" in value:
        raise ValidationError(field, "contains a NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValidationError(field, "contains a lone surrogate (not valid UTF-8)") from None
    return value


def _optional_text(field: str, value: object, limit: int) -> str | None:
    return None if value is None else _text(field, value, limit)


def check_address(channel: Channel, address: object, *, allow_private: bool = False) -> str:
    """``address`` if ``channel`` can use it, else ValidationError naming ``address``."""
    if channel is Channel.IN_APP:
        raise ValidationError("channel", "in_app needs no address (it reaches the user's clients)")
    value = _text("address", address, ADDRESS_MAX)
    if value != value.strip():
        raise ValidationError("address", "has leading or trailing whitespace")
    if channel is Channel.EMAIL and not is_valid_email(value):
        raise ValidationError("address", "not a valid email address")
    if channel is Channel.SMS and not is_valid_e164(value):
        raise ValidationError("address", "not an E.164 phone number (+ then up to 15 digits)")
    if channel is Channel.PUSH and not _FCM_TOKEN.match(value):
        raise ValidationError(
            "address", "not an FCM registration token (8 or more of A-Z a-z 0-9 _ : . -)"
        )
    if channel is Channel.WEBHOOK:
        _check_endpoint(value, allow_private)
    return value


def _check_endpoint(url: str, allow_private: bool) -> None:
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValidationError("address", f"not a valid URL: {exc}") from None
    allowed = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in allowed or not host:
        need = "an http(s)" if allow_private else "an https"
        raise ValidationError("address", f"must be {need} URL with a host")
    if parts.username is not None or parts.password is not None:
        # Credentials belong in the signing secret, not in a URL that is shown.
        raise ValidationError("address", "must not carry a user name or password")
    if allow_private:
        return
    for ip in _host_addresses(host, port or 443):
        if not is_public_address(ip):
            raise ValidationError(
                "address", f"the endpoint's host is not public ({ip}); webhooks go to public hosts"
            )


def _host_addresses(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The host's addresses: the literal itself, or what its name resolves to now.

    A name that does not resolve yet is accepted: the webhook channel checks
    the addresses it connects to at every send, which is the real guard (a
    name can change after registration); this check catches mistakes early.
    """
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def check_secret(secret: object) -> str:
    """A Standard Webhooks secret (``whsec_`` + base64 of 24-64 bytes), else ValidationError."""
    value = _text("secret", secret, 255)
    if not value.startswith(SECRET_PREFIX):
        raise ValidationError("secret", f"must start with {SECRET_PREFIX} (Standard Webhooks)")
    try:
        key = base64.b64decode(value[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValidationError("secret", f"must be base64 after {SECRET_PREFIX}") from None
    low, high = _SECRET_BYTES
    if not low <= len(key) <= high:
        raise ValidationError("secret", f"must encode {low} to {high} bytes, not {len(key)}")
    return value


def _new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_GENERATED_SECRET_BYTES)).decode()
