"""``clarion inspect``: one notification, every channel's state and history, no secrets.

Addresses are masked (``a***@example.com``, ``+1415*****01``, a device token's
first and last characters, a webhook's scheme and host), ``user_addresses.secret``
is never read, and error texts are masked the same way before printing.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from channels.addresses import EMAIL_IN_TEXT
from clarion.core.errors import NotFoundError
from clarion.core.parse import as_uuid
from models.enums import Channel
from models.notifications import (
    Delivery,
    DeliveryAttempt,
    Notification,
    NotificationTemplate,
    UserAddress,
)

_PHONE = re.compile(r"\+\d{8,15}\b")


def mask_email(address: str) -> str:
    local, _, domain = address.partition("@")
    return f"{local[:1]}***@{domain}" if domain else mask_token(address)


def mask_phone(number: str) -> str:
    if len(number) <= 7:
        return number[:2] + "*" * max(0, len(number) - 2)
    return number[:5] + "*" * (len(number) - 7) + number[-2:]


def mask_token(token: str) -> str:
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:4]}...{token[-4:]}"


def mask_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep:
        return mask_token(url)
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/***"


def mask_address(channel: str, address: str) -> str:
    if channel == Channel.EMAIL:
        return mask_email(address)
    if channel == Channel.SMS:
        return mask_phone(address)
    if channel == Channel.WEBHOOK:
        return mask_url(address)
    return mask_token(address)


def mask_text(text: str | None) -> str | None:
    """Mask email addresses and E.164 numbers inside free text (errors)."""
    if text is None:
        return None
    text = EMAIL_IN_TEXT.sub(lambda m: f"{m['local'][:1]}***@{m['domain']}", text)
    return _PHONE.sub(lambda m: mask_phone(m.group(0)), text)


def _v(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC).isoformat(timespec="seconds")
    if isinstance(value, uuid.UUID):
        return str(value)
    return getattr(value, "value", value)


def parse_id(text: str, what: str = "NOTIFICATION_ID") -> uuid.UUID:
    return as_uuid(text, what)


def attempt_json(a: DeliveryAttempt) -> dict[str, Any]:
    return {
        "attempt_id": a.attempt_id,
        "attempt_number": a.attempt_number,
        "at": _v(a.started_at),
        "provider": a.provider,
        "outcome": _v(a.outcome),
        "request_id": a.request_id,
        "duration_ms": a.duration_ms,
        "error": mask_text(a.error_message),
    }


def delivery_json(d: Delivery, attempts: list[DeliveryAttempt]) -> dict[str, Any]:
    return {
        "delivery_id": str(d.delivery_id),
        "channel": _v(d.channel),
        "status": _v(d.status),
        "attempts": d.attempts,
        "throttles": d.throttles,
        "queue": d.queue_name,
        "message_id": d.message_id,
        "provider": d.provider,
        "provider_message_id": d.provider_message_id,
        "last_error": mask_text(d.last_error),
        "queued_at": _v(d.queued_at),
        "sent_at": _v(d.sent_at),
        "delivered_at": _v(d.delivered_at),
        "failed_at": _v(d.failed_at),
        "dead_lettered_at": _v(d.dead_lettered_at),
        "lease_expires_at": _v(d.lease_expires_at),
        "history": [attempt_json(a) for a in attempts],
    }


def notification_json(n: Notification) -> dict[str, Any]:
    return {
        "notification_id": str(n.notification_id),
        "user_id": str(n.user_id),
        "type": _v(n.notification_type),
        "category": _v(n.category),
        "priority": _v(n.priority),
        "status": _v(n.status),
        "channels": n.delivery_channels,
        "auction_id": _v(n.auction_id),
        "bid_id": _v(n.bid_id),
        "created_at": _v(n.created_at),
        "scheduled_at": _v(n.scheduled_at),
        "dispatched_at": _v(n.dispatched_at),
        "expires_at": _v(n.expires_at),
        "sent_at": _v(n.sent_at),
        "delivered_at": _v(n.delivered_at),
        "delivery_attempts": n.delivery_attempts,
        "max_attempts": n.max_attempts,
        "error_message": mask_text(n.error_message),
        "idempotency_key": n.idempotency_key,
    }


def content_json(n: Notification, template: str | None) -> dict[str, Any]:
    return {
        "template": template,
        # What it was rendered with: the template's version and locale, the
        # email layout's version; the email itself by size (see the row for it).
        "template_version": n.template_version,
        "locale": n.locale,
        "email_layout_version": n.email_layout_version,
        "email_html_bytes": len(n.email_html.encode()) if n.email_html is not None else None,
        "title": n.title,
        "message": n.message,
        "action_url": n.action_url,
        "action_label": n.action_label,
        "rich_content": n.rich_content,
        "tags": n.tags,
        "metadata": n.metadata_,
    }


def inspect_notification(
    sessions: sessionmaker[Session], notification_id: uuid.UUID
) -> dict[str, Any]:
    """Everything about one notification, as JSON-ready data; NotFoundError if none."""
    with sessions() as s:
        n = s.get(Notification, notification_id)
        if n is None:
            raise NotFoundError(f"no notification {notification_id}")
        template = None
        if n.template_id is not None:
            t = s.get(NotificationTemplate, n.template_id)
            template = t.key if t else None
        deliveries = list(
            s.scalars(
                sa.select(Delivery)
                .where(Delivery.notification_id == notification_id)
                .order_by(Delivery.channel)
            )
        )
        history: dict[uuid.UUID, list[DeliveryAttempt]] = {d.delivery_id: [] for d in deliveries}
        for a in s.scalars(
            sa.select(DeliveryAttempt)
            .where(DeliveryAttempt.notification_id == notification_id)
            .order_by(DeliveryAttempt.attempt_id)
        ):
            history.setdefault(a.delivery_id, []).append(a)
        # Only the columns needed: the secret column is never read.
        addresses = [
            {
                "channel": _v(r.channel),
                "address": mask_address(str(_v(r.channel)), r.address),
                "active": r.is_active,
                "disabled_reason": r.disabled_reason,
            }
            for r in s.execute(
                sa.select(
                    UserAddress.channel,
                    UserAddress.address,
                    UserAddress.is_active,
                    UserAddress.disabled_reason,
                )
                .where(UserAddress.user_id == n.user_id)
                .order_by(UserAddress.channel, UserAddress.created_at)
            )
        ]
        return {
            "notification": notification_json(n),
            "content": content_json(n, template),
            "addresses": addresses,
            "deliveries": [delivery_json(d, history[d.delivery_id]) for d in deliveries],
        }
