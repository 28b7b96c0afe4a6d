"""What each channel can carry, measured the way its provider measures it.

One place for the per-channel size limits, used twice: by ``clarion.notify``
when a notification is created (a clear ``ValidationError`` before anything
is stored) and by each adapter just before its request (a
:class:`~channels.base.PermanentError`: a row INSERTed with plain SQL never
went through ``notify``).

* SMS: at most :data:`SMS_MAX_SEGMENTS` segments. A text in the GSM 03.38
  alphabet is sent as GSM-7 (160 septets in one segment, 153 per segment of
  a longer one; ``^{}[]~|\\€`` and form feed take two septets); any other
  character makes the whole text UCS-2 (70 UTF-16 units, 67 per segment).
* Push: FCM refuses a message whose payload (notification title and body
  plus the data map) is over 4,096 bytes.
* Email: :data:`EMAIL_MAX_BYTES`, the message size every SES interface
  accepts (the v1 API's 10 MB; v2 and SMTP take more), counted after the
  base64 encoding SES counts.
* Webhook: a body of at most :data:`WEBHOOK_MAX_BYTES`, our own limit so
  that a receiver with a usual request-size limit never sees a cut body.
* In-app: bounded by the limits of ``notify``'s arguments alone.
"""

from __future__ import annotations

import dataclasses
import json
import math

from channels.base import OutgoingMessage, PermanentError
from models.enums import Channel

SMS_MAX_SEGMENTS = 10
PUSH_MAX_BYTES = 4096
EMAIL_MAX_BYTES = 10 * 1024 * 1024
WEBHOOK_MAX_BYTES = 256 * 1024

# GSM 03.38: the basic set, and the extension set (escape + one septet).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = frozenset("\f^{}\\[~]|€")


@dataclasses.dataclass(frozen=True, slots=True)
class Overrun:
    """A message too large for its channel: how large, against which limit."""

    channel: Channel
    size: int
    limit: int
    unit: str

    def __str__(self) -> str:
        return f"{self.channel.value} can carry {self.limit} {self.unit}; this is {self.size}"


def sms_text(title: str, body: str, action_url: str | None) -> str:
    """The SMS text: title line (unless empty or repeated by the body), body, action URL."""
    parts: list[str] = []
    title, body = title.strip(), body.strip()
    if title and not body.startswith(title):
        parts.append(title)
    if body:
        parts.append(body)
    if action_url:
        parts.append(action_url)
    return "\n".join(parts)


def sms_segments(text: str) -> tuple[int, str]:
    """How many segments ``text`` takes, and its encoding (``"GSM-7"`` or ``"UCS-2"``)."""
    if all(c in _GSM_BASIC or c in _GSM_EXTENDED for c in text):
        septets = sum(2 if c in _GSM_EXTENDED else 1 for c in text)
        return (1 if septets <= 160 else math.ceil(septets / 153)), "GSM-7"
    # Characters outside the BMP take two UTF-16 units (a surrogate pair).
    units = len(text.encode("utf-16-le", "surrogatepass")) // 2
    return (1 if units <= 70 else math.ceil(units / 67)), "UCS-2"


def push_payload_bytes(title: str, body: str, data: dict[str, str]) -> int:
    """The bytes FCM counts against its 4 KB limit: title, body and the data map as JSON."""
    payload = {"notification": {"title": title, "body": body}, "data": data}
    return _json_bytes(payload)


def email_bytes(message: OutgoingMessage) -> int:
    """The size SES counts: subject, text and HTML parts after base64 encoding."""
    raw = sum(
        len(part.encode("utf-8", "surrogatepass"))
        for part in (message.title, message.body, message.html or "")
    )
    return math.ceil(raw / 3) * 4


def overrun(message: OutgoingMessage) -> Overrun | None:
    """Why ``message`` is too large for its channel, or None if it fits."""
    channel = message.channel
    if channel is Channel.SMS:
        count, encoding = sms_segments(sms_text(message.title, message.body, message.action_url))
        if count > SMS_MAX_SEGMENTS:
            return Overrun(channel, count, SMS_MAX_SEGMENTS, f"{encoding} segments")
    elif channel is Channel.PUSH:
        data = {**message.data, "notification_id": str(message.notification_id)}
        if message.action_url:
            data["action_url"] = message.action_url
        size = push_payload_bytes(message.title, message.body, data)
        if size > PUSH_MAX_BYTES:
            return Overrun(channel, size, PUSH_MAX_BYTES, "bytes of payload")
    elif channel is Channel.EMAIL:
        size = email_bytes(message)
        if size > EMAIL_MAX_BYTES:
            return Overrun(channel, size, EMAIL_MAX_BYTES, "bytes of message")
    elif channel is Channel.WEBHOOK:
        # Imported here: the webhook adapter imports this module for its own check.
        from channels.webhook import WebhookProvider

        size = _json_bytes(WebhookProvider.payload(message))
        if size > WEBHOOK_MAX_BYTES:
            return Overrun(channel, size, WEBHOOK_MAX_BYTES, "bytes of body")
    return None


def too_large_error(provider: str, over: Overrun) -> PermanentError:
    """The adapter's error for a message over its channel's limit: permanent, sizes kept."""
    return PermanentError(
        f"{provider}: message too large: {over}",
        provider=provider,
        response={"error": "too_large", "size": over.size, "limit": over.limit, "unit": over.unit},
    )


def _json_bytes(payload: object) -> int:
    text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))
