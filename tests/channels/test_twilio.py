"""TwilioProvider: the real twilio SDK over real HTTP against TwilioSandbox."""

from __future__ import annotations

import base64
import logging
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from channels.base import (
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from channels.sandboxes.http import Fault
from channels.sandboxes.twilio import TwilioSandbox
from channels.twilio import TwilioProvider, sms_text
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.enums import Channel

FROM = "+15005550006"
TO = "+15551234567"
MESSAGES = "/Messages.json"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[TwilioSandbox]:
    server = TwilioSandbox()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def twilio(sandbox: TwilioSandbox) -> Iterator[TwilioSandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.reset()


ProviderFactory = Callable[..., TwilioProvider]


@pytest.fixture
def make_provider(twilio: TwilioSandbox) -> Iterator[ProviderFactory]:
    made: list[TwilioProvider] = []

    def make(**overrides: Any) -> TwilioProvider:
        options: dict[str, Any] = {
            "account_sid": twilio.account_sid,
            "auth_token": twilio.auth_token,
            "from_number": FROM,
            "base_url": twilio.url,
            "timeout": 0.5,
        }
        options.update(overrides)
        provider = TwilioProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


def sms(
    to: str = TO, *, title: str = "You've been outbid", body: str = "Someone bid 120 EUR"
) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=Channel.SMS,
        to=to,
        title=title,
        body=body,
    )


def timed_send(provider: TwilioProvider, message: OutgoingMessage) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        provider.send(message)
    return info.value, time.monotonic() - started


# --- success ------------------------------------------------------------------------
def test_send_returns_the_message_sid(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    receipt = make_provider().send(sms())

    assert receipt.provider == "twilio"
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith("SM") and len(receipt.provider_message_id) == 34
    assert receipt.response == {
        "sid": receipt.provider_message_id,
        "status": "queued",
        "error_code": None,
        "error_message": None,
    }
    assert receipt.delivered is False
    assert twilio.sent == [
        {"To": TO, "From": FROM, "Body": "You've been outbid\nSomeone bid 120 EUR"}
    ]
    (request,) = twilio.requests
    assert request.path == f"/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    credentials = f"{twilio.account_sid}:{twilio.auth_token}".encode()
    assert request.headers["authorization"] == "Basic " + base64.b64encode(credentials).decode()


def test_messaging_service_and_status_callback(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    provider = make_provider(
        from_number=None,
        messaging_service_sid="MG" + "0" * 32,
        status_callback="https://clarion.example/callbacks/twilio",
    )

    receipt = provider.send(sms())

    assert receipt.response["status"] == "accepted"
    (form,) = twilio.sent
    assert "From" not in form
    assert form["MessagingServiceSid"] == "MG" + "0" * 32
    assert form["StatusCallback"] == "https://clarion.example/callbacks/twilio"


@pytest.mark.parametrize(
    ("title", "body", "action_url", "expected"),
    [
        ("Outbid", "Someone bid higher", None, "Outbid\nSomeone bid higher"),
        ("", "Someone bid higher", None, "Someone bid higher"),
        ("Outbid", "Outbid: someone bid higher", None, "Outbid: someone bid higher"),
        ("Outbid", "Bid again", "https://a.example/1", "Outbid\nBid again\nhttps://a.example/1"),
    ],
)
def test_sms_text(title: str, body: str, action_url: str | None, expected: str) -> None:
    message = OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=Channel.SMS,
        to=TO,
        title=title,
        body=body,
        action_url=action_url,
    )
    assert sms_text(message) == expected


def test_from_settings(twilio: TwilioSandbox) -> None:
    settings = Settings(
        twilio_account_sid=twilio.account_sid,
        twilio_auth_token=twilio.auth_token,
        twilio_from=FROM,
        twilio_base_url=twilio.url,
        provider_timeout=1.0,
    )
    provider = TwilioProvider.from_settings(settings)
    try:
        assert provider.send(sms()).provider_message_id
    finally:
        provider.close()

    with pytest.raises(SettingsError, match="CLARION_TWILIO_AUTH_TOKEN"):
        TwilioProvider.from_settings(Settings(twilio_account_sid=twilio.account_sid))
    with pytest.raises(SettingsError, match="CLARION_TWILIO_FROM"):
        TwilioProvider.from_settings(
            Settings(twilio_account_sid=twilio.account_sid, twilio_auth_token="x")
        )


def test_a_sender_is_required() -> None:
    with pytest.raises(ValueError, match="from_number or messaging_service_sid"):
        TwilioProvider(account_sid="AC" + "0" * 32, auth_token="x")


# --- throttling and server errors: one request, no sleeping ---------------------------
def test_429_is_throttled_with_retry_after(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    twilio.fail(Fault(status=429, retry_after=2), times=3)

    error, elapsed = timed_send(make_provider(), sms())

    assert isinstance(error, ThrottledError)
    assert error.retry_after == 2.0
    assert error.response["code"] == 20429
    assert len(twilio.requests) == 1  # the SDK neither retried nor slept
    assert elapsed < 1.0


def test_429_without_retry_after(twilio: TwilioSandbox, make_provider: ProviderFactory) -> None:
    twilio.fail(Fault(status=429))

    error, _ = timed_send(make_provider(), sms())

    assert isinstance(error, ThrottledError)
    assert error.retry_after is None


@pytest.mark.parametrize("status", [500, 503])
def test_5xx_is_retryable_after_one_request(
    twilio: TwilioSandbox, make_provider: ProviderFactory, status: int
) -> None:
    twilio.fail(Fault(status=status), times=3)

    error, elapsed = timed_send(make_provider(), sms())

    assert type(error) is RetryableError
    assert error.response["status"] == status
    assert len(twilio.requests) == 1
    assert elapsed < 1.0


def test_503_with_retry_after_is_throttled(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    twilio.fail(Fault(status=503, retry_after=30))

    error, _ = timed_send(make_provider(), sms())

    assert isinstance(error, ThrottledError)
    assert error.retry_after == 30.0


def test_a_proxy_html_502_is_retryable(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    twilio.fail(Fault(status=502, body="<html><body>Bad Gateway</body></html>"))

    error, _ = timed_send(make_provider(), sms())

    assert type(error) is RetryableError
    assert error.response["code"] is None


# --- addresses ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "number", ["5551234567", "+0123456", "+1 555 123 4567", "", "+1555123456789012"]
)
def test_invalid_numbers_are_refused_without_a_request(
    twilio: TwilioSandbox, make_provider: ProviderFactory, number: str
) -> None:
    with pytest.raises(BadAddressError) as info:
        make_provider().send(sms(number))

    assert info.value.disable_address is True
    assert twilio.requests == []


def test_server_side_21211_is_a_bad_address(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    twilio.fail(
        Fault(
            status=400,
            body={"code": 21211, "message": f"The 'To' number {TO} is not a valid phone number."},
        )
    )

    error, _ = timed_send(make_provider(), sms())

    assert isinstance(error, BadAddressError)
    assert error.disable_address is True
    assert error.response["code"] == 21211
    # The row and the logs never get the phone number.
    assert TO not in str(error.response) and TO not in str(error)


@pytest.mark.parametrize(
    ("code", "error_class", "disable"),
    [
        (21610, BadAddressError, True),  # unsubscribed (STOP)
        (21614, BadAddressError, True),  # not a mobile number
        (21612, BadAddressError, False),  # not reachable right now
        (21408, PermanentError, None),  # our account's region permissions
    ],
)
def test_twilio_codes_for_numbers(
    twilio: TwilioSandbox,
    make_provider: ProviderFactory,
    code: int,
    error_class: type[PermanentError],
    disable: bool | None,
) -> None:
    twilio.block(TO, code)

    error, _ = timed_send(make_provider(), sms())

    assert type(error) is error_class
    assert getattr(error, "disable_address", None) is disable
    assert error.response["code"] == code
    assert twilio.sent == []


def test_other_400_is_permanent(twilio: TwilioSandbox, make_provider: ProviderFactory) -> None:
    twilio.fail(Fault(status=400, body={"code": 21606}))

    error, _ = timed_send(make_provider(), sms())

    assert type(error) is PermanentError


def test_too_long_text_is_refused_without_a_request(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    with pytest.raises(PermanentError, match="1600"):
        make_provider().send(sms(body="x" * 1600))
    assert twilio.requests == []


# --- credentials and the network --------------------------------------------------------
def test_wrong_auth_token_is_permanent(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    error, _ = timed_send(make_provider(auth_token="not-the-token"), sms())

    assert type(error) is PermanentError
    assert error.response["status"] == 401
    assert error.response["code"] == 20003
    assert twilio.sent == []


def test_dropped_connection_is_retryable(
    twilio: TwilioSandbox, make_provider: ProviderFactory
) -> None:
    twilio.fail(Fault(drop=True))

    error, _ = timed_send(make_provider(), sms())

    assert type(error) is RetryableError
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert len(twilio.requests) == 1


def test_timeout_is_retryable() -> None:
    # A sandbox of its own: the hung handler wakes after the test and would
    # otherwise record its request in a later test's sandbox.
    slow = TwilioSandbox()
    slow.start()
    provider = TwilioProvider(
        account_sid=slow.account_sid,
        auth_token=slow.auth_token,
        from_number=FROM,
        base_url=slow.url,
        timeout=0.5,
    )
    try:
        slow.fail(Fault(hang=2))
        error, elapsed = timed_send(provider, sms())
    finally:
        provider.close()
        slow.stop()

    assert type(error) is RetryableError
    assert isinstance(error.__cause__, requests.Timeout)
    assert elapsed < 1.5


def test_refused_connection_is_retryable(make_provider: ProviderFactory) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    error, _ = timed_send(make_provider(base_url=f"http://127.0.0.1:{port}"), sms())

    assert type(error) is RetryableError


# --- hygiene ----------------------------------------------------------------------------
def test_logs_hold_no_secrets_numbers_or_bodies(
    twilio: TwilioSandbox, make_provider: ProviderFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    provider = make_provider()
    provider.send(sms(body="secret bid details"))
    twilio.fail(
        Fault(status=400, body={"code": 21211, "message": f"The 'To' number {TO} is invalid"})
    )
    with pytest.raises(BadAddressError):
        provider.send(sms(body="secret bid details"))

    ours = "\n".join(
        r.getMessage() for r in caplog.records if r.name.startswith(("channels", "twilio"))
    )
    assert "sid=SM" in ours
    for secret in (twilio.auth_token, twilio.account_sid, TO, "secret bid details"):
        assert secret not in ours


# --- the sandbox itself -----------------------------------------------------------------
def test_sandbox_checks_e164_and_credentials(twilio: TwilioSandbox) -> None:
    url = f"{twilio.url}/2010-04-01/Accounts/{twilio.account_sid}/Messages.json"
    auth = (twilio.account_sid, twilio.auth_token)
    form = {"To": "5551234", "From": FROM, "Body": "hi"}

    invalid = requests.post(url, data=form, auth=auth, timeout=2)
    unauthorized = requests.post(url, data=form, auth=(twilio.account_sid, "wrong"), timeout=2)

    assert invalid.status_code == 400
    assert invalid.json()["code"] == 21211
    assert unauthorized.status_code == 401
    assert unauthorized.json() == {
        "code": 20003,
        "message": "Authenticate",
        "more_info": "https://www.twilio.com/docs/errors/20003",
        "status": 401,
    }
    assert twilio.sent == []
