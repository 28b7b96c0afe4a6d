"""Email over plain SMTP (a relay, Postfix, Mailpit, ...) with the standard library.

One connection per send: connect, optional STARTTLS and login, one
transaction, QUIT. Reusing connections would save a handshake per mail but
needs liveness checks and a lock per connection; at notification volumes
the simple form is the correct one, and a relay that wants throughput is
better served by SES.

Error mapping, by SMTP reply code and, when the server gives one, by the
RFC 3463 enhanced status code (``5.1.1``)::

    4xx anywhere (421, 450, 451, 452, 454)                 -> RetryableError
    5xx to RCPT TO: 5.1.x / 5.2.1, or 550/551/553 bare      -> BadAddressError
    5xx to DATA: 5.1.x                                     -> BadAddressError
    other 5xx (MAIL FROM, DATA, AUTH, ...)                 -> PermanentError
    timeouts, refused or dropped connections               -> RetryableError
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import TYPE_CHECKING

from channels import limits
from channels.base import (
    JSON,
    BadAddressError,
    ChannelError,
    OutgoingMessage,
    PermanentError,
    Provider,
    Receipt,
    RetryableError,
    redact_emails,
)
from models.enums import Channel

if TYPE_CHECKING:
    from clarion.core.settings import Settings

logger = logging.getLogger(__name__)

_ENHANCED = re.compile(r"^\s*([245])\.(\d{1,3})\.(\d{1,3})\b")


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)


def _plausible_address(address: str) -> bool:
    # Only what would break the SMTP envelope or the To header: a CR/LF could
    # inject commands or headers. Deeper validation is the server's job.
    local, at, domain = address.rpartition("@")
    return bool(local and at and domain) and not any(
        c.isspace() or ord(c) < 32 or c in "<>" for c in address
    )


class SMTPProvider(Provider):
    """Sends :class:`OutgoingMessage` emails through one SMTP server."""

    name = "smtp"
    channel = Channel.EMAIL

    def __init__(
        self,
        *,
        host: str,
        port: int,
        from_address: str,
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.from_address = from_address
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout
        self._ssl_context = ssl_context
        # ``from_address`` may carry a display name ("Clarion <n@x.com>"): the
        # header keeps it, the envelope (MAIL FROM) takes the bare address.
        self._envelope_from = parseaddr(from_address)[1] or from_address
        # Message-IDs on our own sender domain; make_msgid()'s default calls
        # socket.getfqdn(), a DNS lookup with no timeout, on every send.
        self._msgid_domain = self._envelope_from.rpartition("@")[2] or "clarion.invalid"
        if username and not starttls:
            logger.warning(
                "SMTP login to %s:%s without STARTTLS sends the password in clear", host, port
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> SMTPProvider:
        return cls(
            host=settings.smtp_host,
            port=settings.smtp_port,
            from_address=settings.email_from,
            username=settings.smtp_username,
            password=settings.smtp_password,
            starttls=settings.smtp_starttls,
            timeout=settings.provider_timeout,
        )

    def build(self, message: OutgoingMessage) -> EmailMessage:
        """The MIME message for ``message``: text, plus an HTML alternative when given."""
        mail = EmailMessage()
        mail["Subject"] = message.title
        mail["From"] = self.from_address
        mail["To"] = message.to
        mail["Date"] = formatdate(localtime=False)
        mail["Message-ID"] = make_msgid(domain=self._msgid_domain)
        # Lets a bounce or a support question be traced back to the notification.
        mail["X-Clarion-Notification-Id"] = str(message.notification_id)
        mail["X-Clarion-Delivery-Id"] = str(message.delivery_id)
        for name, value in message.headers.items():  # List-Unsubscribe (RFC 8058)
            mail[name] = value
        mail.set_content(message.body)
        if message.html:
            mail.add_alternative(message.html, subtype="html")
        return mail

    def send(self, message: OutgoingMessage) -> Receipt:
        too_large = limits.overrun(message)
        if too_large is not None:
            raise limits.too_large_error(self.name, too_large)
        if not _plausible_address(message.to):
            raise BadAddressError("not an email address", provider=self.name)
        try:
            mail = self.build(message)
        except ValueError as exc:  # a CR/LF in the subject: header injection refused
            raise PermanentError(
                f"cannot build the email: {redact_emails(str(exc))}",
                provider=self.name,
                response={"stage": "build"},
            ) from exc
        message_id = str(mail["Message-ID"])
        # No ``with SMTP(...)``: its __exit__ sends QUIT even after a failure,
        # which waits a second timeout on a hung server and can replace the
        # real error with the QUIT reply's. Connecting after construction keeps
        # the socket in hand to close even when the greeting times out.
        smtp = smtplib.SMTP(timeout=self.timeout)
        stage = "connect"
        accepted = False
        try:
            smtp.connect(self.host, self.port)
            if self.starttls:
                stage = "starttls"
                smtp.starttls(context=self._ssl_context or ssl.create_default_context())
            if self.username:
                stage = "auth"
                smtp.login(self.username, self._password or "")
            stage = "send"
            smtp.send_message(mail, from_addr=self._envelope_from, to_addrs=[message.to])
            accepted = True
        except smtplib.SMTPException as exc:
            raise self._smtp_error(exc, stage) from exc
        except OSError as exc:
            # Timeouts, refused and reset connections, TLS failures.
            raise RetryableError.from_exception(
                f"SMTP {stage} failed", exc, provider=self.name, stage=stage
            ) from exc
        finally:
            if accepted:
                # The server has the mail: a failing QUIT must not turn that
                # into an error, or the retry would send it twice.
                _quiet_quit(smtp)
            else:
                smtp.close()
        logger.debug(
            "smtp accepted notification_id=%s delivery_id=%s",
            message.notification_id,
            message.delivery_id,
        )
        return Receipt(
            provider=self.name, provider_message_id=message_id, response={"message_id": message_id}
        )

    def _smtp_error(self, exc: smtplib.SMTPException, stage: str) -> ChannelError:
        """The one :class:`ChannelError` that an smtplib error at ``stage`` means."""
        if isinstance(exc, smtplib.SMTPServerDisconnected | smtplib.SMTPConnectError):
            # SMTPConnectError is a bad greeting (421 busy, 554 go away):
            # a server-side condition, retried like any connection failure.
            return RetryableError.from_exception(
                f"SMTP {stage}", exc, provider=self.name, stage=stage
            )
        if isinstance(exc, smtplib.SMTPRecipientsRefused):
            # One recipient per send, so the dict has one entry.
            code, reply = next(iter(exc.recipients.values()), (550, b""))
            return self._classify(code, _text(reply), "rcpt")
        if isinstance(exc, smtplib.SMTPResponseException):
            sub_stage = stage
            if isinstance(exc, smtplib.SMTPSenderRefused):
                sub_stage = "mail"
            elif isinstance(exc, smtplib.SMTPDataError):
                sub_stage = "data"
            return self._classify(exc.smtp_code, _text(exc.smtp_error), sub_stage)
        # SMTPNotSupportedError (no STARTTLS / AUTH offered), SMTPHeloError
        # without a code, ...: the server cannot do what we are configured for.
        return PermanentError.from_exception(f"SMTP {stage}", exc, provider=self.name, stage=stage)

    def _classify(self, code: int, reply: str, stage: str) -> ChannelError:
        text = redact_emails(reply)
        response: JSON = {"stage": stage, "code": code, "reply": text}
        summary = f"SMTP {code} at {stage}: {text}"
        if 400 <= code < 500:
            # Greylisting (451), mailbox busy (450), too many recipients or
            # storage (452), service closing (421), temporary auth failure (454).
            return RetryableError(summary, provider=self.name, response=response)
        enhanced = _ENHANCED.match(reply)
        if enhanced is not None:
            response["enhanced"] = ".".join(enhanced.groups())
        about_address = False
        if stage in ("rcpt", "data") and enhanced is not None:
            # 5.1.x is "addressing status" (bad mailbox, bad domain, moved);
            # 5.2.1 "mailbox disabled". 5.2.2 (mailbox full) and 5.7.x (policy,
            # spam) are not the address's fault.
            subject, detail = enhanced.group(2), enhanced.group(3)
            about_address = subject == "1" or (subject == "2" and detail == "1")
        elif stage == "rcpt":
            # Without an enhanced code, the RFC 5321 meanings at RCPT TO:
            # 550 no such mailbox, 551 user not local, 553 mailbox name invalid.
            about_address = code in (550, 551, 553)
        if about_address:
            return BadAddressError(summary, provider=self.name, response=response)
        # Includes SMTPAuthenticationError (535): wrong credentials are a
        # configuration problem no retry of this message can fix.
        return PermanentError(summary, provider=self.name, response=response)


def _quiet_quit(smtp: smtplib.SMTP) -> None:
    """QUIT and close, ignoring errors: the mail was already accepted."""
    try:
        smtp.quit()
    except (smtplib.SMTPException, OSError):
        smtp.close()
