"""SNS messages are believed only once verified: certificate host, signature v1/v2, age, topic."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable

import pytest
from snskit import CERT_URL, OTHER_TOPIC, TOPIC, Signer, notification, ses_event

from clarion.receipts import sns
from models.enums import Channel
from models.receipts import DeliveryReport, Reported


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer.generate()


def store(signer: Signer, fetched: list[str] | None = None) -> sns.CertificateStore:
    def fetch(url: str) -> bytes:
        if fetched is not None:
            fetched.append(url)
        return signer.pem

    return sns.CertificateStore(fetch)


def check(signer: Signer, body: dict[str, object], **kwargs: object) -> sns.SNSMessage:
    return sns.verify(
        json.dumps(body).encode(),
        certificates=kwargs.pop("certificates", store(signer)),  # type: ignore[arg-type]
        topics=(TOPIC,),
        now=dt.datetime.now(dt.UTC),
    )


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_signed_message_verifies(signer: Signer, version: str) -> None:
    body = signer.sign(notification(ses_event("Delivery", "m-1")), version)
    message = check(signer, body)
    assert message.topic_arn == TOPIC
    assert json.loads(message.message)["eventType"] == "Delivery"


@pytest.mark.parametrize(
    "alter",
    [
        lambda b: b.update(Message=b["Message"].replace("Delivery", "Bounce")),
        lambda b: b.update(TopicArn=OTHER_TOPIC),
        lambda b: b.update(Timestamp="2026-12-02T05:00:00.001Z"),
        lambda b: b.update(SignatureVersion="2" if b["SignatureVersion"] == "1" else "1"),
        lambda b: b.update(Signature=b["Signature"][:-8] + "AAAAAAA="),
        lambda b: b.update(Signature="not base64!"),
    ],
    ids=["message", "topic", "timestamp", "version", "signature", "garbage"],
)
def test_an_altered_message_is_refused(
    signer: Signer, alter: Callable[[dict[str, str]], None]
) -> None:
    body = signer.sign(notification(ses_event("Delivery", "m-2")))
    alter(body)
    with pytest.raises(sns.Refused):
        check(signer, body)


def test_a_message_signed_by_another_key_is_refused(signer: Signer) -> None:
    forger = Signer.generate()
    body = forger.sign(notification(ses_event("Bounce", "m-3")))
    with pytest.raises(sns.Refused, match="does not verify"):
        check(signer, body)  # the certificate at CERT_URL is the real signer's


def test_a_wrong_topic_is_refused_even_when_signed(signer: Signer) -> None:
    body = signer.sign(notification(ses_event("Delivery", "m-4"), topic=OTHER_TOPIC))
    with pytest.raises(sns.Refused, match="TopicArn"):
        check(signer, body)


def test_an_old_message_is_refused_as_a_replay(signer: Signer) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    body = signer.sign(notification(ses_event("Delivery", "m-5"), timestamp=old))
    with pytest.raises(sns.Refused, match="replay"):
        check(signer, body)


@pytest.mark.parametrize(
    "url",
    [
        "http://sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com.evil.example/cert.pem",
        "https://evil.example/sns.us-east-1.amazonaws.com/cert.pem",
        "https://user@sns.us-east-1.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com:8443/cert.pem",
        "https://s3.amazonaws.com/cert.pem",
        "https://sns.us-east-1.amazonaws.com/cert.txt",
    ],
)
def test_certificates_come_only_from_sns_hosts(signer: Signer, url: str) -> None:
    fetched: list[str] = []
    body = signer.sign(notification(ses_event("Delivery", "m-6")))
    body["SigningCertURL"] = url
    with pytest.raises(sns.Refused, match="SigningCertURL"):
        check(signer, body, certificates=store(signer, fetched))
    assert fetched == []  # refused before any fetch


def test_the_certificate_is_fetched_once(signer: Signer) -> None:
    fetched: list[str] = []
    certificates = store(signer, fetched)
    for _ in range(3):
        check(
            signer,
            signer.sign(notification(ses_event("Delivery", "m-7"))),
            certificates=certificates,
        )
    assert fetched == [CERT_URL]


def test_ses_events_map_to_reports() -> None:
    delivery_id = uuid.uuid4()

    def report(kind: str, **kw: str) -> DeliveryReport:
        body = notification(ses_event(kind, "ses-1", delivery_id=delivery_id, **kw))
        message = sns.SNSMessage(
            type="Notification",
            message_id=body["MessageId"],
            topic_arn=TOPIC,
            message=body["Message"],
            timestamp=dt.datetime.now(dt.UTC),
        )
        found = sns.ses_report(message)
        assert found is not None
        return found

    delivered = report("Delivery")
    assert delivered.reported is Reported.DELIVERED and delivered.delivery_id == delivery_id
    hard = report("Bounce")
    assert hard.reported is Reported.FAILED
    assert [(s.channel, s.address, s.reason) for s in hard.suppress] == [
        (Channel.EMAIL, "someone@example.com", "bounce")
    ]
    soft = report("Bounce", bounce_type="Transient")
    assert soft.reported is Reported.PROGRESS and soft.suppress == ()
    complaint = report("Complaint")
    assert complaint.reported is Reported.FEEDBACK
    assert complaint.suppress[0].reason == "complaint"
    assert report("Reject").reported is Reported.FAILED
    delay = report("DeliveryDelay")
    assert delay.reported is Reported.PROGRESS
    assert delay.detail == {"delayType": "MailboxFull"}
