"""What every provider adapter shares: the message in, the receipt out, the errors.

An adapter is thin. It builds the provider's request from an
:class:`OutgoingMessage`, calls the SDK with a timeout and with the SDK's own
retries and sleeps turned off, and maps the answer to a :class:`Receipt` or to
exactly one of the errors below. Whether and when to try again is decided
elsewhere, in one pure function (``workers.retry_policy``).
"""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Self
from uuid import UUID

from channels.addresses import EMAIL_IN_TEXT
from clarion.core.errors import ClarionError
from models.enums import Channel

JSON = dict[str, Any]


@dataclasses.dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One delivery of one notification through one channel to one address."""

    notification_id: UUID
    delivery_id: UUID
    channel: Channel
    to: str
    title: str
    body: str
    html: str | None = None
    action_url: str | None = None
    action_label: str | None = None
    # Flat string data for push payloads and webhook bodies (ids, category, ...).
    data: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # Webhook signing secret of the endpoint (never logged).
    secret: str | None = dataclasses.field(default=None, repr=False)
    # Stable across retries of the same delivery: the webhook-id, SES tag, ...
    idempotency_key: str = ""
    # Push: messages with the same key replace each other on the device.
    collapse_key: str | None = None
    # Extra email headers (List-Unsubscribe, RFC 8058); other channels ignore them.
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __repr__(self) -> str:  # never show the address or the body in logs
        return (
            f"OutgoingMessage(notification_id={self.notification_id}, "
            f"delivery_id={self.delivery_id}, channel={self.channel.value})"
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Receipt:
    """A provider accepted the message.

    ``delivered`` is True where acceptance is delivery (a webhook's 2xx, an
    in-app publish); otherwise the message is only *sent* and a later
    delivery report may mark it delivered.
    """

    provider: str
    provider_message_id: str | None
    response: JSON
    delivered: bool = False


class ChannelError(ClarionError):
    """A provider did not accept the message.

    ``response`` is a JSON-safe summary of what the provider answered (status,
    error code, request id): it is written to the row, so it never holds the
    message body or a credential.
    """

    retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        response: JSON | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.provider = provider
        self.response: JSON = dict(response or {})
        self.request_id = request_id

    @classmethod
    def from_exception(
        cls, what: str, exc: BaseException, *, provider: str, **response: Any
    ) -> Self:
        """This error for ``exc``, raised instead of a provider's answer, named by its type only.

        The exception's text is left out on purpose: it may quote the request
        (an address, a URL). ``response`` adds entries before ``"error"``.
        """
        name = type(exc).__name__
        return cls(f"{what}: {name}", provider=provider, response={**response, "error": name})


class RetryableError(ChannelError):
    """Timeouts, connection errors, 5xx: the same message may succeed later."""

    retryable = True


class ThrottledError(RetryableError):
    """The provider asked us to slow down (429, TooManyRequests).

    ``retry_after`` is the provider's Retry-After in seconds, when it gave one.
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        retry_after: float | None = None,
        response: JSON | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, response=response, request_id=request_id)
        self.retry_after = retry_after


class PermanentError(ChannelError):
    """Rejected content or an invalid request: retrying cannot help."""


class BadAddressError(PermanentError):
    """The address is invalid or no longer exists.

    ``disable_address`` tells the worker to disable the address row (an FCM
    token reported unregistered, a webhook endpoint answering 410).
    """

    def __init__(
        self,
        message: str,
        *,
        provider: str,
        disable_address: bool = False,
        response: JSON | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider, response=response, request_id=request_id)
        self.disable_address = disable_address


class Provider(abc.ABC):
    """A delivery provider for one channel."""

    #: short provider name written to the attempt history ("ses", "twilio", ...)
    name: ClassVar[str]
    channel: ClassVar[Channel]
    #: Whether a batch's calls run together on the worker's sending pool
    #: (``workers.sending``): true for calls that wait on a remote provider;
    #: false for a local round trip of microseconds, cheaper made in place.
    concurrent_sends: ClassVar[bool] = True

    @abc.abstractmethod
    def send(self, message: OutgoingMessage) -> Receipt:
        """Hand ``message`` to the provider once.

        Returns a receipt, or raises exactly one :class:`ChannelError` subclass.
        Never sleeps and never retries by itself.
        """

    def send_many(self, messages: Sequence[OutgoingMessage]) -> list[Receipt | ChannelError]:
        """Hand several messages to the provider, each once: a receipt or the
        error of each, in order. The default sends them one by one; a provider
        that can do better in one round trip (the in-app channel's pipelined
        PUBLISH) overrides it. The deliverer hands a provider with
        ``concurrent_sends`` one message at a time (one per sending thread), the
        others a batch's messages at once."""
        results: list[Receipt | ChannelError] = []
        for message in messages:
            try:
                results.append(self.send(message))
            except ChannelError as exc:
                results.append(exc)
        return results

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections; the default holds none."""


# With its angle brackets, so ``<a@b.example>`` becomes ``<address>``, not ``<<address>>``.
_EMAIL_LIKE = re.compile(rf"<?{EMAIL_IN_TEXT.pattern}>?")
#: Provider error texts kept in rows and logs are cut to this length.
MAX_ERROR_TEXT = 300


def redact_emails(text: str) -> str:
    """``text`` with anything that looks like an email address replaced, cut short.

    Providers' error texts often quote the recipient; they end up in rows and logs.
    """
    return _EMAIL_LIKE.sub("<address>", text)[:MAX_ERROR_TEXT]


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        from datetime import UTC, datetime
        from email.utils import parsedate_to_datetime

        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds)
