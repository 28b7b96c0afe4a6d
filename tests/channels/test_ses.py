"""SESProvider: real boto3 sesv2 over real HTTP against SESSandbox."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from channels.base import (
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from channels.sandboxes.http import Fault
from channels.sandboxes.ses import SEND_PATH, SESSandbox, raw_mime
from channels.ses import SESProvider
from clarion.core.settings import Settings
from models.enums import Channel

TIMEOUT = 0.3


@pytest.fixture(autouse=True)
def _no_aws_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The developer's ~/.aws must not change what the tests see.
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    for name in ("AWS_PROFILE", "AWS_MAX_ATTEMPTS", "AWS_RETRY_MODE", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def _server() -> Iterator[SESSandbox]:
    # One server per module: stopping one waits out serve_forever's 0.5 s poll.
    with SESSandbox() as ses:
        yield ses


@pytest.fixture
def sandbox(_server: SESSandbox) -> SESSandbox:
    _server.reset()
    return _server


def make_provider(url: str, **overrides: object) -> SESProvider:
    kwargs: dict[str, object] = {
        "region": "us-east-1",
        "from_address": "notifications@clarion.test",
        "endpoint_url": url,
        "access_key_id": "AKIDTEST",
        "secret_access_key": "not-a-secret",
        "timeout": TIMEOUT,
    }
    kwargs.update(overrides)
    return SESProvider(**kwargs)  # type: ignore[arg-type]


@pytest.fixture
def provider(sandbox: SESSandbox) -> Iterator[SESProvider]:
    ses = make_provider(sandbox.url)
    yield ses
    ses.close()


def message(to: str = "bidder@example.com", html: str | None = "<p>Outbid</p>") -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=Channel.EMAIL,
        to=to,
        title="You were outbid",
        body="Someone bid more.",
        html=html,
        idempotency_key="key-1",
    )


# --- success ---------------------------------------------------------------------
def test_send_returns_the_ses_message_id(sandbox: SESSandbox, provider: SESProvider) -> None:
    msg = message()
    receipt = provider.send(msg)

    assert receipt.provider == "ses"
    assert receipt.provider_message_id
    assert receipt.response["MessageId"] == receipt.provider_message_id
    assert receipt.response["RequestId"]
    assert receipt.delivered is False
    [sent] = sandbox.sent
    assert sent["FromEmailAddress"] == "notifications@clarion.test"
    assert sent["Destination"] == {"ToAddresses": ["bidder@example.com"]}
    mail = raw_mime(sent)
    assert mail["Subject"] == "You were outbid"
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert (text.get_content_type(), text.get_content().strip()) == (
        "text/plain",
        "Someone bid more.",
    )
    assert (html.get_content_type(), html.get_content().strip()) == ("text/html", "<p>Outbid</p>")
    assert mail["X-Clarion-Delivery-Id"] == str(msg.delivery_id)
    assert {t["Name"]: t["Value"] for t in sent["EmailTags"]} == {
        "clarion_notification_id": str(msg.notification_id),
        "clarion_delivery_id": str(msg.delivery_id),
    }
    assert "ConfigurationSetName" not in sent
    [request] = sandbox.requests
    assert request.path == SEND_PATH
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 ")


def test_text_only_and_configuration_set(sandbox: SESSandbox) -> None:
    provider = make_provider(sandbox.url, configuration_set="clarion-events")
    try:
        provider.send(message(html=None))
    finally:
        provider.close()
    [sent] = sandbox.sent
    mail = raw_mime(sent)
    assert mail.get_content_type() == "text/plain"
    assert mail.get_content().strip() == "Someone bid more."
    assert sent["ConfigurationSetName"] == "clarion-events"


def test_from_settings(sandbox: SESSandbox) -> None:
    settings = Settings(
        ses_endpoint_url=sandbox.url,
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="not-a-secret",
        email_from="from-settings@clarion.test",
        provider_timeout=TIMEOUT,
    )
    provider = SESProvider.from_settings(settings)
    try:
        provider.send(message())
    finally:
        provider.close()
    assert sandbox.sent[0]["FromEmailAddress"] == "from-settings@clarion.test"


# --- throttling ------------------------------------------------------------------
def test_429_is_throttled_with_retry_after_after_one_request(
    sandbox: SESSandbox, provider: SESProvider
) -> None:
    sandbox.fail(Fault(status=429, retry_after=2), times=3)

    with pytest.raises(ThrottledError) as caught:
        provider.send(message())

    assert caught.value.retry_after == 2.0
    assert caught.value.response["code"] == "TooManyRequestsException"
    assert caught.value.request_id
    assert caught.value.response["request_id"] == caught.value.request_id
    # botocore retried nothing: one request on the wire, the other faults unused.
    assert len(sandbox.requests) == 1
    assert sandbox.requests[0].headers["amz-sdk-request"] == "attempt=1; max=1"


def test_limit_exceeded_is_throttled_without_retry_after(
    sandbox: SESSandbox, provider: SESProvider
) -> None:
    sandbox.fail(Fault(status=400, body={"__type": "LimitExceededException", "message": "quota"}))
    with pytest.raises(ThrottledError) as caught:
        provider.send(message())
    assert caught.value.retry_after is None


# --- retryable -------------------------------------------------------------------
@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retryable_after_one_request(
    sandbox: SESSandbox, provider: SESProvider, status: int
) -> None:
    sandbox.fail(Fault(status=status), times=3)
    with pytest.raises(RetryableError) as caught:
        provider.send(message())
    assert not isinstance(caught.value, ThrottledError)
    assert caught.value.response["status"] == status
    assert len(sandbox.requests) == 1


def test_dropped_connection_is_retryable(sandbox: SESSandbox, provider: SESProvider) -> None:
    sandbox.fail(Fault(drop=True))
    with pytest.raises(RetryableError) as caught:
        provider.send(message())
    assert caught.value.response == {"error": "ConnectionClosedError"}
    assert len(sandbox.requests) == 1


def test_timeout_is_retryable_and_bounded() -> None:
    # A sandbox of its own: the hung handler records its request after the test.
    with SESSandbox() as sandbox:
        provider = make_provider(sandbox.url)
        sandbox.fail(Fault(hang=1.5))
        started = time.monotonic()
        try:
            with pytest.raises(RetryableError) as caught:
                provider.send(message())
            elapsed = time.monotonic() - started
        finally:
            provider.close()
    assert elapsed < 1.2  # the 0.3 s read timeout, not the 1.5 s hang
    assert caught.value.response == {"error": "ReadTimeoutError"}


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(f"http://127.0.0.1:{port}")
    try:
        with pytest.raises(RetryableError):
            provider.send(message())
    finally:
        provider.close()


# --- permanent -------------------------------------------------------------------
def test_message_rejected_is_permanent_and_redacted(
    sandbox: SESSandbox, provider: SESProvider
) -> None:
    sandbox.fail(
        Fault(
            status=400,
            body={
                "__type": "MessageRejected",
                "message": "Email address is not verified: bidder@example.com",
            },
        )
    )
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    error = caught.value
    assert type(error) is PermanentError
    assert error.response["code"] == "MessageRejected"
    # Addresses never reach the error text, which is logged and stored.
    assert "@" not in str(error)
    assert "@" not in error.response["message"]
    assert isinstance(error.__cause__, Exception)  # raise ... from the ClientError


def test_bad_recipient_is_bad_address(sandbox: SESSandbox, provider: SESProvider) -> None:
    with pytest.raises(BadAddressError) as caught:
        provider.send(message(to="not-an-address"))
    assert caught.value.response["code"] == "BadRequestException"
    assert caught.value.disable_address is False
    assert sandbox.sent == []


def test_other_bad_request_is_permanent_not_bad_address(
    sandbox: SESSandbox, provider: SESProvider
) -> None:
    sandbox.fail(Fault(status=400, body="Subject is too long"))
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    assert type(caught.value) is PermanentError


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("SendingPausedException", 400),
        ("AccountSuspendedException", 400),
        ("MailFromDomainNotVerifiedException", 400),
        ("NotFoundException", 404),
    ],
)
def test_account_level_refusals_are_permanent_and_flagged(
    sandbox: SESSandbox, provider: SESProvider, code: str, status: int
) -> None:
    sandbox.fail(Fault(status=status, body={"__type": code, "message": "account problem"}))
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    assert type(caught.value) is PermanentError
    assert caught.value.response["code"] == code
    assert caught.value.response["scope"] == "account"


def test_create_identity_is_accepted(sandbox: SESSandbox, provider: SESProvider) -> None:
    answer = provider._client.create_email_identity(EmailIdentity="clarion.test")
    assert answer["IdentityType"] == "DOMAIN"
    assert sandbox.identities == {"clarion.test"}
