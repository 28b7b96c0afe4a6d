"""SMTPProvider: stdlib smtplib over real SMTP against SMTPSandbox (aiosmtpd)."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator

import pytest

from channels.base import (
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from channels.sandboxes.smtp import SMTPSandbox
from channels.smtp import SMTPProvider
from clarion.core.settings import Settings
from models.enums import Channel

TIMEOUT = 0.3
FROM = "notifications@clarion.test"


@pytest.fixture(scope="module")
def _server() -> Iterator[SMTPSandbox]:
    with SMTPSandbox(credentials=("clarion", "s3cret")) as smtp:
        yield smtp


@pytest.fixture
def sandbox(_server: SMTPSandbox) -> SMTPSandbox:
    _server.reset()
    return _server


@pytest.fixture
def provider(sandbox: SMTPSandbox) -> SMTPProvider:
    return SMTPProvider(host=sandbox.host, port=sandbox.port, from_address=FROM, timeout=TIMEOUT)


def message(
    to: str = "bidder@example.com", title: str = "Überboten", html: str | None = "<p>Outbid</p>"
) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=Channel.EMAIL,
        to=to,
        title=title,
        body="Someone bid more.",
        html=html,
    )


# --- success ---------------------------------------------------------------------
def test_send_delivers_mail_with_message_id(sandbox: SMTPSandbox, provider: SMTPProvider) -> None:
    msg = message()
    receipt = provider.send(msg)

    [mail] = sandbox.messages
    assert receipt.provider == "smtp"
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id == mail.message["Message-ID"]
    assert receipt.provider_message_id.endswith("@clarion.test>")
    assert mail.mail_from == FROM
    assert mail.rcpt_tos == ["bidder@example.com"]
    assert mail.message["Subject"] == "Überboten"
    assert mail.message["To"] == "bidder@example.com"
    assert mail.message["X-Clarion-Notification-Id"] == str(msg.notification_id)
    assert mail.message["X-Clarion-Delivery-Id"] == str(msg.delivery_id)
    plain = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert plain is not None and plain.get_content().strip() == "Someone bid more."
    assert html is not None and html.get_content().strip() == "<p>Outbid</p>"
    assert mail.authenticated_as is None


def test_text_only(sandbox: SMTPSandbox, provider: SMTPProvider) -> None:
    provider.send(message(html=None))
    [mail] = sandbox.messages
    assert mail.message.get_content_type() == "text/plain"


def test_display_name_sender(sandbox: SMTPSandbox) -> None:
    provider = SMTPProvider(
        host=sandbox.host, port=sandbox.port, from_address=f"Clarion <{FROM}>", timeout=TIMEOUT
    )
    receipt = provider.send(message())
    [mail] = sandbox.messages
    assert mail.mail_from == FROM  # the envelope takes the bare address
    assert mail.message["From"] == f"Clarion <{FROM}>"
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.endswith("@clarion.test>")


def test_login(sandbox: SMTPSandbox) -> None:
    settings = Settings(
        smtp_host=sandbox.host,
        smtp_port=sandbox.port,
        smtp_username="clarion",
        smtp_password="s3cret",
        email_from=FROM,
        provider_timeout=TIMEOUT,
    )
    SMTPProvider.from_settings(settings).send(message())
    assert sandbox.messages[0].authenticated_as == "clarion"


def test_wrong_password_is_permanent(sandbox: SMTPSandbox) -> None:
    provider = SMTPProvider(
        host=sandbox.host,
        port=sandbox.port,
        from_address=FROM,
        username="clarion",
        password="wrong",
        timeout=TIMEOUT,
    )
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    assert type(caught.value) is PermanentError
    assert caught.value.response["code"] == 535
    assert caught.value.response["stage"] == "auth"
    assert sandbox.messages == []


def test_starttls_not_offered_is_permanent(sandbox: SMTPSandbox) -> None:
    provider = SMTPProvider(
        host=sandbox.host, port=sandbox.port, from_address=FROM, starttls=True, timeout=TIMEOUT
    )
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    assert caught.value.response == {"stage": "starttls", "error": "SMTPNotSupportedError"}


# --- bad addresses ---------------------------------------------------------------
@pytest.mark.parametrize(
    "reply",
    ["550 5.1.1 <bidder@example.com>: user unknown", "553 mailbox name not allowed", "551 no"],
)
def test_recipient_refused_is_bad_address(
    sandbox: SMTPSandbox, provider: SMTPProvider, reply: str
) -> None:
    sandbox.fail(reply, stage="rcpt")
    with pytest.raises(BadAddressError) as caught:
        provider.send(message())
    assert caught.value.response["stage"] == "rcpt"
    assert caught.value.response["code"] == int(reply[:3])
    assert "@" not in str(caught.value)  # the quoted address is redacted
    assert sandbox.messages == []


def test_unparsable_address_is_refused_before_connecting(provider: SMTPProvider) -> None:
    with pytest.raises(BadAddressError):
        provider.send(message(to="bidder@example.com\r\nRCPT TO:<other@example.com>"))


# --- permanent -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "stage"),
    [
        ("554 5.7.1 message refused as spam", "data"),
        ("550 5.7.1 relaying denied", "rcpt"),  # policy, not the address
        ("552 5.2.2 mailbox full", "rcpt"),
        ("550 5.7.1 sender blocked", "mail"),
    ],
)
def test_other_5xx_is_permanent(
    sandbox: SMTPSandbox, provider: SMTPProvider, reply: str, stage: str
) -> None:
    sandbox.fail(reply, stage=stage)  # type: ignore[arg-type]
    with pytest.raises(PermanentError) as caught:
        provider.send(message())
    assert type(caught.value) is PermanentError
    assert caught.value.response["enhanced"] == reply.split()[1]


def test_header_injection_is_refused(sandbox: SMTPSandbox, provider: SMTPProvider) -> None:
    with pytest.raises(PermanentError):
        provider.send(message(title="Hi\r\nBcc: everyone@example.com"))
    assert sandbox.messages == []


# --- retryable -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("reply", "stage"),
    [
        ("451 4.7.1 greylisted, try later", "rcpt"),
        ("450 4.2.1 mailbox busy", "rcpt"),
        ("452 4.5.3 too many recipients", "rcpt"),
        ("421 4.3.2 shutting down", "mail"),
        ("451 4.3.0 local error", "data"),
    ],
)
def test_4xx_is_retryable(
    sandbox: SMTPSandbox, provider: SMTPProvider, reply: str, stage: str
) -> None:
    sandbox.fail(reply, stage=stage)  # type: ignore[arg-type]
    with pytest.raises(RetryableError) as caught:
        provider.send(message())
    assert not isinstance(caught.value, ThrottledError)
    assert caught.value.response["code"] == int(reply[:3])
    # and the next attempt goes through
    provider.send(message())
    assert len(sandbox.messages) == 1


def test_dropped_connection_is_retryable(sandbox: SMTPSandbox, provider: SMTPProvider) -> None:
    sandbox.fail(drop=True, stage="data")
    with pytest.raises(RetryableError) as caught:
        provider.send(message())
    assert caught.value.response["error"] == "SMTPServerDisconnected"
    assert sandbox.messages == []


def test_timeout_is_retryable_and_bounded() -> None:
    # A server of its own: the hung handler would otherwise outlive the test.
    with SMTPSandbox() as sandbox:
        provider = SMTPProvider(
            host=sandbox.host, port=sandbox.port, from_address=FROM, timeout=TIMEOUT
        )
        sandbox.fail(hang=1.5, stage="data")
        started = time.monotonic()
        with pytest.raises(RetryableError):
            provider.send(message())
        elapsed = time.monotonic() - started
    assert elapsed < 1.2  # the 0.3 s timeout, not the 1.5 s hang


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = SMTPProvider(host="127.0.0.1", port=port, from_address=FROM, timeout=TIMEOUT)
    with pytest.raises(RetryableError) as caught:
        provider.send(message())
    assert caught.value.response == {"stage": "connect", "error": "ConnectionRefusedError"}
