"""A signing certificate of our own and SNS messages signed with it, the way SNS signs.

Not a conftest.py: the unit and web tiers import it by name. The certificate is
issued by a CA generated here (the ``cryptography`` package); Clarion is made to
"fetch" it either by a fetch function handed to ``CertificateStore`` or by
seeding the shared Redis cache under its SNS URL.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import json
import uuid
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from clarion.receipts.sns import canonical_string

REGION = "us-east-1"
CERT_URL = f"https://sns.{REGION}.amazonaws.com/SimpleNotificationService-clarion-test.pem"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:clarion-ses-events"
OTHER_TOPIC = f"arn:aws:sns:{REGION}:123456789012:someone-else"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


@dataclasses.dataclass
class Signer:
    key: rsa.RSAPrivateKey
    pem: bytes

    @classmethod
    def generate(cls) -> Signer:
        now = dt.datetime.now(dt.UTC)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca = (
            x509.CertificateBuilder()
            .subject_name(_name("Clarion test CA"))
            .issuer_name(_name("Clarion test CA"))
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(f"sns.{REGION}.amazonaws.com"))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(ca_key, hashes.SHA256())
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    def sign(self, body: dict[str, Any], version: str = "1") -> dict[str, Any]:
        body = {**body, "SignatureVersion": version, "SigningCertURL": CERT_URL}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signature = self.key.sign(canonical_string(body), padding.PKCS1v15(), algorithm)
        body["Signature"] = base64.b64encode(signature).decode()
        return body


def notification(
    event: dict[str, Any],
    *,
    topic: str = TOPIC,
    timestamp: dt.datetime | None = None,
    message_id: str | None = None,
) -> dict[str, Any]:
    """An unsigned SNS Notification carrying ``event`` (an SES event) as its Message."""
    when = timestamp or dt.datetime.now(dt.UTC)
    return {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": json.dumps(event),
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
    }


def ses_event(
    kind: str,
    message_id: str,
    *,
    delivery_id: uuid.UUID | None = None,
    recipient: str = "someone@example.com",
    bounce_type: str = "Permanent",
) -> dict[str, Any]:
    """An SES event of ``kind`` (Delivery, Bounce, Complaint, Reject, DeliveryDelay)."""
    mail: dict[str, Any] = {
        "timestamp": "2026-12-02T05:00:00.000Z",
        "messageId": message_id,
        "destination": [recipient],
        "tags": {},
    }
    if delivery_id is not None:
        mail["tags"]["clarion_delivery_id"] = [str(delivery_id)]
    event: dict[str, Any] = {"eventType": kind, "mail": mail}
    if kind == "Delivery":
        event["delivery"] = {"recipients": [recipient], "processingTimeMillis": 512}
    elif kind == "Bounce":
        event["bounce"] = {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [{"emailAddress": recipient, "diagnosticCode": "550 5.1.1"}],
        }
    elif kind == "Complaint":
        event["complaint"] = {
            "complainedRecipients": [{"emailAddress": recipient}],
            "complaintFeedbackType": "abuse",
        }
    elif kind == "Reject":
        event["reject"] = {"reason": "Bad content"}
    elif kind == "DeliveryDelay":
        event["deliveryDelay"] = {"delayType": "MailboxFull"}
    return event
