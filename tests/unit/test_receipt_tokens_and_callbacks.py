"""One-click tokens, Twilio status mapping and SNS subscription confirmation, without services."""

from __future__ import annotations

import datetime as dt
import json
import uuid

import pytest
import sqlalchemy as sa
from snskit import TOPIC, Signer
from twilio.request_validator import RequestValidator

from channels.unsubscribe import UnsubscribeLinks, read_token, sign_token
from clarion.core.settings import Settings
from clarion.receipts import sns
from clarion.receipts.service import Answer, ReceiptService
from clarion.receipts.twilio_status import status_report, valid_signature
from models.enums import Channel
from models.receipts import Reported

SECRET = "a-secret-that-is-long-enough-0123456789"


def test_a_token_names_its_user_and_category_and_nothing_else_passes() -> None:
    user = uuid.uuid4()
    token = sign_token(SECRET, user, "auction")
    found = read_token(SECRET, token)
    assert found is not None and (found.user_id, found.category) == (user, "auction")
    assert read_token("another-secret-that-is-long-enough-0123", token) is None
    for i in range(len(token)):  # any changed character
        changed = token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1 :]
        assert read_token(SECRET, changed) is None, i
    other = sign_token(SECRET, user, "bid")
    swapped = ".".join(token.split(".")[:3] + other.split(".")[3:])
    assert read_token(SECRET, swapped) is None
    assert read_token(SECRET, "") is None


def test_the_headers_are_rfc_8058s() -> None:
    links = UnsubscribeLinks("https://notify.example.com", SECRET)
    headers = links.headers(uuid.uuid4(), "bid")
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert headers["List-Unsubscribe"].startswith("<https://notify.example.com/unsubscribe/u1.")


@pytest.mark.parametrize(
    ("status", "code", "reported", "suppressed"),
    [
        ("delivered", "", Reported.DELIVERED, None),
        ("undelivered", "30003", Reported.FAILED, None),
        ("failed", "21610", Reported.FAILED, "opted_out"),
        ("undelivered", "30006", Reported.FAILED, "invalid"),
        ("sent", "", Reported.PROGRESS, None),
        ("queued", "", Reported.PROGRESS, None),
    ],
)
def test_twilio_statuses_map(
    status: str, code: str, reported: Reported, suppressed: str | None
) -> None:
    params = {"MessageSid": "SM1", "MessageStatus": status, "ErrorCode": code, "To": "+15551"}
    report = status_report(params)
    assert report is not None and report.reported is reported
    assert report.receipt_id == f"twilio:SM1:{status}"
    reasons = [(s.channel, s.reason) for s in report.suppress]
    assert reasons == ([(Channel.SMS, suppressed)] if suppressed else [])
    if reported is Reported.FAILED:
        assert report.error == f"Twilio error {code}"


def test_twilio_signatures_are_the_packages() -> None:
    url = "https://notify.example.com/receipts/twilio"
    params = {"MessageSid": "SM1", "MessageStatus": "delivered"}
    good = RequestValidator("token").compute_signature(url, params)
    assert valid_signature("token", url, params, good)
    assert not valid_signature("token", url + "?x=1", params, good)
    assert not valid_signature("token", url, {**params, "MessageStatus": "failed"}, good)
    assert not valid_signature("other", url, params, good)
    assert not valid_signature("token", url, params, "")


def _service(signer: Signer, confirmed: list[str]) -> ReceiptService:
    return ReceiptService(
        settings=Settings(sns_topic_arns=(TOPIC,)),
        engine=sa.create_engine("sqlite://"),
        certificates=sns.CertificateStore(lambda url: signer.pem),
        confirm=confirmed.append,
    )


def _confirmation(subscribe_url: str) -> dict[str, str]:
    return {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": "tok",
        "TopicArn": TOPIC,
        "Message": "You have chosen to subscribe...",
        "SubscribeURL": subscribe_url,
        "Timestamp": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }


def test_a_verified_subscription_is_confirmed_at_sns_only() -> None:
    signer = Signer.generate()
    confirmed: list[str] = []
    service = _service(signer, confirmed)
    url = "https://sns.us-east-1.amazonaws.com/?Action=ConfirmSubscription&Token=tok"
    body = signer.sign(_confirmation(url), "2")
    assert service.sns(json.dumps(body).encode())[0] is Answer.OK
    assert confirmed == [url]
    elsewhere = signer.sign(_confirmation("https://evil.example/confirm"), "2")
    assert service.sns(json.dumps(elsewhere).encode())[0] is Answer.FORBIDDEN
    forged = dict(body, SubscribeURL="https://sns.us-east-1.amazonaws.com/?Token=other")
    assert service.sns(json.dumps(forged).encode())[0] is Answer.FORBIDDEN
    assert confirmed == [url]


def test_twilio_callbacks_of_the_backup_account_are_accepted_with_its_token() -> None:
    import models

    engine = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    models.metadata.create_all(engine)
    service = ReceiptService(
        settings=Settings(
            twilio_auth_token="first-token",
            twilio_backup_account_sid="AC2",
            twilio_backup_auth_token="backup-token",
            public_base_url="https://notify.example.com",
        ),
        engine=engine,
        certificates=sns.CertificateStore(lambda url: b""),
        confirm=lambda url: None,
    )
    url = "https://notify.example.com/receipts/twilio"
    params = {"MessageSid": "SM-not-ours", "MessageStatus": "delivered"}
    for token in ("first-token", "backup-token"):
        signature = RequestValidator(token).compute_signature(url, params)
        assert service.twilio("/receipts/twilio", params, signature) == (Answer.OK, "unknown")
    forged = RequestValidator("other-token").compute_signature(url, params)
    assert service.twilio("/receipts/twilio", params, forged)[0] is Answer.FORBIDDEN
