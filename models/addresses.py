"""Every write to ``user_addresses`` made on behalf of the application.

The public API (``clarion.add_address`` and friends) and ``clarion address``
come through here: adding an address, re-enabling one that was disabled,
disabling one, and listing a user's. Values arrive already validated; this
module only knows the table. (The workers' write-back still disables an
address a provider reported dead, inside its own transaction on the hot
path.)
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from clarion.core.clock import utcnow
from clarion.core.errors import NotFoundError, ValidationError
from models.enums import Channel
from models.notifications import UserAddress
from models.suppressions import lift


def find(
    session: Session, user_id: uuid.UUID, channel: Channel, address: str
) -> UserAddress | None:
    return session.scalars(
        sa.select(UserAddress).where(
            UserAddress.user_id == user_id,
            UserAddress.channel == channel,
            UserAddress.address == address,
        )
    ).one_or_none()


def add(
    session: Session,
    *,
    user_id: uuid.UUID,
    channel: Channel,
    address: str,
    label: str | None,
    secret: str | None,
) -> UserAddress:
    """Insert the address, or re-enable it if it was disabled; flush, never commit.

    An address that is already active is refused: adding it again would
    silently replace its signing secret, which the receiver still verifies with.
    """
    existing = find(session, user_id, channel, address)
    if existing is None:
        row = UserAddress(
            user_id=user_id, channel=channel, address=address, label=label, secret=secret
        )
        try:
            # A savepoint, so that losing a race to a concurrent add leaves the
            # caller's transaction usable.
            with session.begin_nested():
                session.add(row)
                session.flush()
        except sa.exc.IntegrityError:
            raise ValidationError(
                "address", "is already registered for this user and channel"
            ) from None
        _vouch(session, channel, address)
        return row
    if existing.is_active:
        raise ValidationError("address", "is already registered for this user and channel")
    existing.is_active = True
    existing.disabled_at = None
    existing.disabled_reason = None
    existing.secret = secret
    existing.label = label
    session.flush()
    _vouch(session, channel, address)
    return existing


def _vouch(session: Session, channel: Channel, address: str) -> None:
    """A device token or endpoint the provider reported dead is suppressed; the
    application adding it again vouches for a new registration. (Email and SMS
    suppressions, bounces and complaints, are lifted by an operator only.)"""
    if channel in (Channel.PUSH, Channel.WEBHOOK):
        lift(session.connection(), channel, address, reason="added again by the application")


def disable(session: Session, address_id: uuid.UUID, reason: str) -> UserAddress:
    """Mark the address inactive (kept for the history); NotFoundError if unknown."""
    row = session.get(UserAddress, address_id, with_for_update=True)
    if row is None:
        raise NotFoundError(f"address {address_id}")
    if row.is_active:
        row.is_active = False
        row.disabled_at = utcnow()
        row.disabled_reason = reason
        session.flush()
    return row


def list_for(
    session: Session,
    user_id: uuid.UUID,
    *,
    channels: Sequence[Channel] | None = None,
    include_disabled: bool = False,
) -> list[UserAddress]:
    """The user's addresses, by channel then oldest first."""
    query = sa.select(UserAddress).where(UserAddress.user_id == user_id)
    if channels:
        query = query.where(UserAddress.channel.in_(channels))
    if not include_disabled:
        query = query.where(UserAddress.is_active.is_(True))
    return list(session.scalars(query.order_by(UserAddress.channel, UserAddress.created_at)).all())
