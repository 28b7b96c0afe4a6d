"""Amazon SNS over HTTP: verify a message, then read the SES event inside it.

Verification, in this order, before anything in the message is believed:

1. ``SigningCertURL`` is ``https://sns.<region>.amazonaws.com/...pem`` (or
   ``.amazonaws.com.cn``): no other host, scheme, port or user info;
2. the certificate is fetched from there (once: cached in this process and
   in Redis for every ``clarion web`` process, see :class:`CertificateStore`);
3. the signature (``SignatureVersion`` 1: RSA SHA-1, 2: RSA SHA-256) over the
   canonical string of the message's type is valid for that certificate;
4. the ``Timestamp`` is no older than :data:`MAX_AGE` (a replay of an old
   message is refused; a recent one is applied once, by its ``MessageId``);
5. the ``TopicArn`` is one of ``CLARION_SNS_TOPIC_ARNS``.

Any failure raises :class:`Refused` (answered 403, nothing changes).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import re
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from channels.base import redact_emails
from models.enums import Channel
from models.receipts import DeliveryReport, Reported, SuppressionRequest

__all__ = [
    "MAX_AGE",
    "CertificateStore",
    "Refused",
    "SNSMessage",
    "canonical_string",
    "check_cert_url",
    "is_sns_url",
    "ses_report",
    "verify",
]

log = logging.getLogger("clarion.receipts.sns")

#: A message older than this is refused as a replay (SNS retries for up to an
#: hour with its default delivery policy).
MAX_AGE = dt.timedelta(hours=1)
_CERT_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
    "UnsubscribeConfirmation": (
        "Message",
        "MessageId",
        "SubscribeURL",
        "Timestamp",
        "Token",
        "TopicArn",
        "Type",
    ),
}
_HASHES: dict[str, Callable[[], hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}


class Refused(Exception):
    """The message is not believed; the text says why (safe to log)."""


@dataclasses.dataclass(frozen=True, slots=True)
class SNSMessage:
    type: str
    message_id: str
    topic_arn: str
    message: str
    timestamp: dt.datetime
    subscribe_url: str | None = None


def check_cert_url(url: str) -> str:
    """``url`` if SNS may sign with a certificate from it, else :class:`Refused`."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "https":
        raise Refused("SigningCertURL is not https")
    if parts.username or parts.password or parts.port not in (None, 443):
        raise Refused("SigningCertURL carries user info or a port")
    if not _CERT_HOST.match(parts.hostname or ""):
        raise Refused("SigningCertURL is not on an sns.<region>.amazonaws.com host")
    if not parts.path.endswith(".pem"):
        raise Refused("SigningCertURL is not a .pem file")
    return url


def is_sns_url(url: str) -> bool:
    """Whether ``url`` is https on an SNS host (where a SubscribeURL may point)."""
    parts = urllib.parse.urlsplit(url)
    return (
        parts.scheme == "https"
        and not parts.username
        and parts.port in (None, 443)
        and bool(_CERT_HOST.match(parts.hostname or ""))
    )


def canonical_string(body: Mapping[str, Any]) -> bytes:
    """The string SNS signs for this message type."""
    fields = _FIELDS.get(str(body.get("Type")))
    if fields is None:
        raise Refused(f"unknown SNS message Type {str(body.get('Type'))[:40]!r}")
    out = []
    for name in fields:
        value = body.get(name)
        if value is None:
            if name == "Subject":
                continue
            raise Refused(f"SNS message without {name}")
        out.append(f"{name}\n{value}\n")
    return "".join(out).encode()


class CertificateStore:
    """SNS signing certificates by URL: fetched once, kept in this process and in Redis.

    ``fetch`` is the only network call (an HTTPS GET of a checked URL);
    ``cache`` (a Redis client, optional) shares what one process fetched with
    the others for a day.
    """

    _PREFIX = "clarion:sns:cert:"

    def __init__(self, fetch: Callable[[str], bytes], cache: Any = None) -> None:
        self._fetch = fetch
        self._cache = cache
        self._local: dict[str, x509.Certificate] = {}

    @classmethod
    def key(cls, url: str) -> str:
        return cls._PREFIX + hashlib.sha256(url.encode()).hexdigest()

    def get(self, url: str) -> x509.Certificate:
        url = check_cert_url(url)
        cert = self._local.get(url)
        if cert is not None:
            return cert
        pem: bytes | None = None
        if self._cache is not None:
            try:
                pem = self._cache.get(self.key(url))
            except Exception as exc:  # a cache, never a reason to refuse
                log.warning("SNS certificate cache unavailable (%s)", type(exc).__name__)
        if pem is None:
            try:
                pem = self._fetch(url)
            except Exception as exc:
                raise Refused(
                    f"SigningCertURL could not be fetched ({type(exc).__name__})"
                ) from exc
            if self._cache is not None:
                try:
                    self._cache.set(self.key(url), pem, ex=86400)
                except Exception as exc:
                    log.warning("SNS certificate cache unavailable (%s)", type(exc).__name__)
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            raise Refused("SigningCertURL is not a PEM certificate") from exc
        self._local[url] = cert
        return cert


def fetch_https(timeout: float) -> Callable[[str], bytes]:
    """The production fetch: a GET of a checked https URL, no redirects."""

    def fetch(url: str) -> bytes:
        import requests

        answer = requests.get(check_cert_url(url), timeout=timeout, allow_redirects=False)
        answer.raise_for_status()
        return answer.content

    return fetch


def verify(
    raw: bytes,
    *,
    certificates: CertificateStore,
    topics: tuple[str, ...],
    now: dt.datetime,
) -> SNSMessage:
    """The message in ``raw`` (an SNS HTTP POST body) once verified; :class:`Refused` if not."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused("body is not JSON") from exc
    if not isinstance(body, dict):
        raise Refused("body is not a JSON object")
    version = str(body.get("SignatureVersion", ""))
    algorithm = _HASHES.get(version)
    if algorithm is None:
        raise Refused(f"unsupported SignatureVersion {version[:10]!r}")
    signed = canonical_string(body)
    try:
        signature = base64.b64decode(str(body.get("Signature", "")), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused("Signature is not base64") from exc
    cert = certificates.get(str(body.get("SigningCertURL", "")))
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused("the signing certificate's key is not RSA")
    try:
        key.verify(signature, signed, padding.PKCS1v15(), algorithm())
    except InvalidSignature as exc:
        raise Refused("signature does not verify") from exc
    try:
        timestamp = dt.datetime.fromisoformat(str(body["Timestamp"]).replace("Z", "+00:00"))
    except ValueError as exc:
        raise Refused("Timestamp is not an ISO 8601 time") from exc
    if timestamp.tzinfo is None:
        raise Refused("Timestamp has no time zone")
    if now - timestamp > MAX_AGE:
        raise Refused("message is older than an hour (a replay)")
    if timestamp - now > dt.timedelta(minutes=5):
        raise Refused("Timestamp is in the future")
    topic = str(body["TopicArn"])
    if topic not in topics:
        raise Refused("TopicArn is not one of CLARION_SNS_TOPIC_ARNS")
    return SNSMessage(
        type=str(body["Type"]),
        message_id=str(body["MessageId"]),
        topic_arn=topic,
        message=str(body["Message"]),
        timestamp=timestamp,
        subscribe_url=body.get("SubscribeURL"),
    )


def ses_report(message: SNSMessage) -> DeliveryReport | None:
    """The delivery report an SES event notification holds, or None if it holds none
    (not JSON, not an SES event). Recipients' addresses are used for suppression only."""
    try:
        event = json.loads(message.message)
    except ValueError:
        return None
    if not isinstance(event, dict):
        return None
    kind = str(event.get("eventType") or event.get("notificationType") or "")
    mail = event.get("mail")
    if not kind or not isinstance(mail, dict):
        return None
    tags = mail.get("tags") if isinstance(mail.get("tags"), dict) else {}
    delivery_id = _uuid((tags or {}).get("clarion_delivery_id"))
    base: dict[str, Any] = {
        "provider": "ses",
        "receipt_id": f"sns:{message.message_id}",
        "kind": kind,
        "provider_message_id": str(mail.get("messageId") or "") or None,
        "delivery_id": delivery_id,
        "occurred_at": message.timestamp,
    }
    if kind == "Delivery":
        delivery = event.get("delivery") or {}
        return DeliveryReport(
            **base,
            reported=Reported.DELIVERED,
            detail={"processingTimeMillis": delivery.get("processingTimeMillis")},
        )
    if kind == "Bounce":
        bounce = event.get("bounce") or {}
        bounce_type = str(bounce.get("bounceType", ""))
        sub_type = str(bounce.get("bounceSubType", ""))
        detail = {"bounceType": bounce_type, "bounceSubType": sub_type}
        if bounce_type != "Permanent":  # transient or undetermined: SES keeps trying
            return DeliveryReport(**base, reported=Reported.PROGRESS, detail=detail)
        return DeliveryReport(
            **base,
            reported=Reported.FAILED,
            error=redact_emails(f"permanent bounce ({sub_type})"),
            detail=detail,
            suppress=tuple(
                SuppressionRequest(Channel.EMAIL, r["emailAddress"], "bounce")
                for r in bounce.get("bouncedRecipients") or []
                if isinstance(r, dict) and r.get("emailAddress")
            ),
        )
    if kind == "Complaint":
        complaint = event.get("complaint") or {}
        return DeliveryReport(
            **base,
            reported=Reported.FEEDBACK,
            detail={"complaintFeedbackType": complaint.get("complaintFeedbackType")},
            suppress=tuple(
                SuppressionRequest(Channel.EMAIL, r["emailAddress"], "complaint")
                for r in complaint.get("complainedRecipients") or []
                if isinstance(r, dict) and r.get("emailAddress")
            ),
        )
    if kind == "Reject":
        reason = str((event.get("reject") or {}).get("reason", ""))[:100]
        return DeliveryReport(
            **base,
            reported=Reported.FAILED,
            error=f"rejected ({reason})",
            detail={"reason": reason},
        )
    if kind == "DeliveryDelay":
        delay = event.get("deliveryDelay") or {}
        return DeliveryReport(
            **base, reported=Reported.PROGRESS, detail={"delayType": delay.get("delayType")}
        )
    if kind == "Rendering Failure":
        return DeliveryReport(**base, reported=Reported.FAILED, error="rendering failure")
    return DeliveryReport(**base, reported=Reported.PROGRESS)  # Send, Open, Click, ...


def _uuid(value: Any) -> uuid.UUID | None:
    if isinstance(value, list) and value:
        value = value[0]
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None
