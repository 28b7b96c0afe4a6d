"""Email through Amazon SES (the ``sesv2`` API) with boto3.

One ``send_email`` call per message, with botocore's own retries off
(``total_max_attempts=1``): whether and when to try again is ``workers.retry_policy``'s
decision, and a botocore retry loop would both hide throttling from it and
sleep inside a worker thread.

Error mapping (``ClientError`` code, else HTTP status)::

    TooManyRequestsException, LimitExceededException, Throttling, ...  -> ThrottledError
    BadRequestException / InvalidParameterValue about the recipient    -> BadAddressError
    MessageRejected, BadRequestException, MailFromDomainNotVerified,
    AccountSuspended, SendingPaused, NotFound, other 4xx               -> PermanentError
    5xx, RequestTimeout, connection errors, timeouts                   -> RetryableError
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

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
    ThrottledError,
    parse_retry_after,
    redact_emails,
)
from channels.http_status import transient_http_error
from models.enums import Channel

if TYPE_CHECKING:
    from clarion.core.settings import Settings

logger = logging.getLogger(__name__)

# Codes botocore itself treats as throttling (botocore/retries/standard.py), plus
# SES's own. LimitExceededException is what SES answers when a sending quota is
# used up: waiting is the only cure, so it is a throttle, not a failure.
_THROTTLE_CODES = frozenset(
    {
        "TooManyRequestsException",
        "LimitExceededException",
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "RequestLimitExceeded",
        "SlowDown",
    }
)
# Transient by botocore's own reckoning although they come with a 4xx status.
# ExpiredToken: refreshable credentials (an instance role) are renewed on the
# next call; botocore would have retried it, and we turned its retries off.
_TRANSIENT_CODES = frozenset(
    {
        "RequestTimeout",
        "RequestTimeoutException",
        "PriorRequestNotComplete",
        "InternalFailure",
        "ExpiredToken",
        "ExpiredTokenException",
    }
)
# Account- or configuration-level refusals. They are permanent for *this*
# message: retrying it for hours cannot lift a suspension or verify a domain,
# and a retry storm would only pile load on a broken account. Each one needs
# an operator, so the error response carries ``"scope": "account"`` for
# alerting, and the message can be re-driven once the account is fixed.
_ACCOUNT_CODES = frozenset(
    {
        "AccountSuspendedException",
        "SendingPausedException",
        "MailFromDomainNotVerifiedException",
        "NotFoundException",  # the configuration set does not exist
        # Credentials or IAM policy: equally an operator's problem.
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
    }
)
_ADDRESS_CODES = frozenset({"BadRequestException", "InvalidParameterValue"})
# SES's wording when it cannot parse a recipient (shared with the v1 API).
_ADDRESS_PROBLEM = re.compile(
    r"illegal address|invalid (email )?address|missing final '@domain'|"
    r"(local address|domain) (contains|starts with|ends with)|domain contains",
    re.IGNORECASE,
)


class SESProvider(Provider):
    """Sends :class:`OutgoingMessage` emails with SES v2 ``SendEmail`` (Simple content)."""

    name = "ses"
    channel = Channel.EMAIL

    def __init__(
        self,
        *,
        region: str,
        from_address: str,
        endpoint_url: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        configuration_set: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.from_address = from_address
        self.configuration_set = configuration_set
        config = Config(
            region_name=region,
            connect_timeout=timeout,
            read_timeout=timeout,
            # One attempt: our retry policy is the only one (see module docstring).
            # Not ``max_attempts``: in a client Config that key counts *retries*
            # (botocore adds one), so ``max_attempts=1`` still means 2 requests.
            retries={"mode": "standard", "total_max_attempts": 1},
        )
        # A session of our own: boto3's default session is shared module state
        # and not safe to create clients from concurrently. The client itself
        # is thread-safe, so one per provider serves every worker thread.
        session = boto3.session.Session(
            aws_access_key_id=access_key_id,
            aws_secret_access_key=secret_access_key,
            region_name=region,
        )
        self._client: Any = session.client("sesv2", endpoint_url=endpoint_url, config=config)

    @classmethod
    def from_settings(cls, settings: Settings) -> SESProvider:
        return cls(
            region=settings.ses_region,
            from_address=settings.email_from,
            endpoint_url=settings.ses_endpoint_url,
            access_key_id=settings.aws_access_key_id,
            secret_access_key=settings.aws_secret_access_key,
            configuration_set=settings.ses_configuration_set,
            timeout=settings.provider_timeout,
        )

    def send(self, message: OutgoingMessage) -> Receipt:
        too_large = limits.overrun(message)
        if too_large is not None:
            raise limits.too_large_error(self.name, too_large)
        body: dict[str, Any] = {"Text": {"Data": message.body, "Charset": "UTF-8"}}
        if message.html:
            body["Html"] = {"Data": message.html, "Charset": "UTF-8"}
        params: dict[str, Any] = {
            "FromEmailAddress": self.from_address,
            "Destination": {"ToAddresses": [message.to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": message.title, "Charset": "UTF-8"},
                    "Body": body,
                }
            },
            # Tag values allow [A-Za-z0-9_-]: str(UUID) qualifies. The tags come
            # back in SES event notifications (bounces, complaints, deliveries),
            # which is how a delivery report finds its row.
            "EmailTags": [
                {"Name": "clarion_notification_id", "Value": str(message.notification_id)},
                {"Name": "clarion_delivery_id", "Value": str(message.delivery_id)},
            ],
        }
        if message.headers:
            # RFC 8058 List-Unsubscribe and List-Unsubscribe-Post, signed per recipient.
            params["Content"]["Simple"]["Headers"] = [
                {"Name": name, "Value": value} for name, value in message.headers.items()
            ]
        if self.configuration_set:
            params["ConfigurationSetName"] = self.configuration_set
        try:
            answer = self._client.send_email(**params)
        except ClientError as exc:
            raise self._client_error(exc) from exc
        except (ConnectionError, HTTPClientError) as exc:
            # Connect/read timeouts, refused or dropped connections, TLS errors.
            # A read timeout may come after SES accepted the mail: the retry can
            # then duplicate it, which at-least-once delivery accepts.
            raise RetryableError.from_exception("SES unreachable", exc, provider=self.name) from exc
        except BotoCoreError as exc:
            # Missing credentials, parameter validation: configuration or input
            # problems that a retry of the same message cannot fix.
            raise PermanentError.from_exception(
                "SES request not made", exc, provider=self.name
            ) from exc
        message_id = str(answer["MessageId"])
        request_id = answer.get("ResponseMetadata", {}).get("RequestId")
        logger.debug(
            "ses accepted notification_id=%s delivery_id=%s message_id=%s",
            message.notification_id,
            message.delivery_id,
            message_id,
        )
        return Receipt(
            provider=self.name,
            provider_message_id=message_id,
            response={"MessageId": message_id, "RequestId": request_id},
        )

    def close(self) -> None:
        self._client.close()

    def _client_error(self, exc: ClientError) -> ChannelError:
        """The one :class:`ChannelError` that ``exc`` (an SES error answer) means."""
        error: dict[str, Any] = exc.response.get("Error", {})
        metadata: dict[str, Any] = exc.response.get("ResponseMetadata", {})
        code = str(error.get("Code", ""))
        text = redact_emails(str(error.get("Message", "")))
        status = int(metadata.get("HTTPStatusCode") or 0)
        request_id = metadata.get("RequestId")
        headers: dict[str, str] = metadata.get("HTTPHeaders", {})
        retry_after = parse_retry_after(headers.get("retry-after"))
        response: JSON = {"code": code, "status": status, "request_id": request_id}
        if text:
            response["message"] = text
        summary = f"SES {code or status}: {text}" if text else f"SES {code or status}"

        transient = transient_http_error(
            status,
            summary,
            provider=self.name,
            retry_after=retry_after,
            response=response,
            request_id=request_id,
            throttled=code in _THROTTLE_CODES,
            transient=code in _TRANSIENT_CODES,
            # AWS reports a timeout by its code (RequestTimeout, in _TRANSIENT_CODES);
            # a 408 without one has always been left to the mapping below.
            retry_408=False,
        )
        if transient is not None:
            if isinstance(transient, ThrottledError):
                # A throttle's row always records retry_after, None when SES gave none.
                transient.response["retry_after"] = retry_after
            return transient
        if code in _ADDRESS_CODES and _ADDRESS_PROBLEM.search(text):
            # The recipient is the only address in the request that varies per
            # message; a bad sender is our configuration and would fail every
            # send at once, so an address complaint is taken as the recipient's.
            return BadAddressError(
                summary, provider=self.name, response=response, request_id=request_id
            )
        if code in _ACCOUNT_CODES:
            response["scope"] = "account"
        return PermanentError(summary, provider=self.name, response=response, request_id=request_id)
