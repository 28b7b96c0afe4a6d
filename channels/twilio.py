"""SMS through Twilio's Messages API, with the ``twilio`` SDK (9.x).

What the SDK does by itself, and what this adapter does about it:

* ``TwilioHttpClient`` has no timeout by default: we always pass one.
* It makes no retries of its own on ``http://`` (requests' default adapter)
  and none on ``https://`` unless given ``max_retries``; we mount an adapter
  with ``max_retries=0`` on both so that stays true whatever the defaults
  become.
* Its errors carry the HTTP status and Twilio's code but not the response
  headers, so Retry-After is read from the response the HTTP client kept;
  the client is shared by worker threads, so ours keeps it per thread.
* Connection errors and timeouts are not wrapped: ``requests`` exceptions come
  through as they are.
* It logs every request URL (holding the account SID) and every response's
  headers at INFO on ``twilio.http_client``: ours logs the method and status
  at DEBUG instead.
* ``Client`` reads ``TWILIO_EDGE`` / ``TWILIO_REGION`` from the environment and
  rewrites host names with them; with a ``base_url`` override (a sandbox)
  that would break the URL, so they are cleared then.
"""

from __future__ import annotations

import logging
import re
import threading
from typing import TYPE_CHECKING, Any

import requests
from requests.adapters import HTTPAdapter
from twilio.base.exceptions import TwilioException
from twilio.http.http_client import TwilioHttpClient
from twilio.rest import Client

from channels import limits
from channels.addresses import is_valid_e164
from channels.base import (
    MAX_ERROR_TEXT,
    BadAddressError,
    ChannelError,
    OutgoingMessage,
    PermanentError,
    Provider,
    Receipt,
    RetryableError,
    parse_retry_after,
)
from channels.http_status import on_5xx, transient_http_error
from channels.requests_errors import requests_error
from clarion.core.errors import SettingsError
from models.enums import Channel

if TYPE_CHECKING:
    from clarion.core.settings import Settings

log = logging.getLogger(__name__)

#: Twilio refuses longer bodies (error 21617); checked before the call.
MAX_BODY = 1600

# Twilio error codes that blame the recipient's number, and whether the number
# should be disabled. https://www.twilio.com/docs/api/errors
BAD_ADDRESS_CODES: dict[int, bool] = {
    21211: True,  # invalid 'To' number: it will never become valid
    21614: True,  # not a mobile number (a landline cannot receive SMS)
    # The recipient replied STOP. Every later send fails the same way until they
    # reply START, which Clarion does not see: disable, re-enable on request.
    21610: True,
    # Not reachable via SMS right now (carrier routing, the To/From pair): the
    # number may work later or from another sender, so keep it enabled.
    21612: False,
}
# Not here on purpose: 21408 ("permission to send to this region is not
# enabled") and 21606/21608 (our sender, or a trial account's unverified
# recipient) are our account's configuration, not the recipient's fault. They
# are PermanentError so the numbers stay enabled once the account is fixed.

#: Twilio's code for 429 Too Many Requests.
TOO_MANY_REQUESTS = 20429

# Anything that looks like a phone number, so provider messages such as
# "The 'To' number +15551234567 is not a valid phone number." can be stored.
_PHONE_LIKE = re.compile(r"\+?\d[\d\s().-]{5,}\d")


def _redact(text: str) -> str:
    return _PHONE_LIKE.sub("[number]", text)[:MAX_ERROR_TEXT]


#: Where ``clarion web`` takes Twilio's status callbacks (``clarion.web.receipts``).
STATUS_CALLBACK_PATH = "/receipts/twilio"


class _OneShotHttpClient(TwilioHttpClient):  # type: ignore[misc]  # twilio is untyped
    """``TwilioHttpClient`` with a timeout, no retries, the last response per thread, quiet logs."""

    def __init__(self, timeout: float) -> None:
        super().__init__(timeout=timeout, max_retries=0)
        adapter = HTTPAdapter(max_retries=0, pool_maxsize=32)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        self._local = threading.local()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        # The SDK turns an error answer into an exception without its headers:
        # keep the response (this thread's own) for Retry-After.
        self._local.response = None
        response = super().request(*args, **kwargs)
        self._local.response = response
        return response

    @property
    def last_response(self) -> Any:
        """This thread's last ``twilio.http.response.Response`` (None before any or on error)."""
        return getattr(self._local, "response", None)

    def log_request(self, kwargs: dict[str, Any]) -> None:
        # The SDK's version logs the URL, which holds the account SID.
        log.debug("twilio request: %s", kwargs.get("method"))

    def log_response(self, status_code: int, response: Any) -> None:
        log.debug("twilio response: HTTP %s", status_code)


class TwilioProvider(Provider):
    """Sends an :class:`OutgoingMessage` as one SMS through Twilio.

    The SMS text is the title on the first line, then the body, then the
    action URL (an SMS has no subject and no buttons); the title is left out
    when empty or when the body already starts with it. Texts over 1,600
    characters are refused before any request (Twilio would answer 21617).
    """

    name = "twilio"
    channel = Channel.SMS

    def __init__(
        self,
        *,
        account_sid: str,
        auth_token: str,
        from_number: str | None = None,
        messaging_service_sid: str | None = None,
        base_url: str | None = None,
        timeout: float = 10.0,
        status_callback: str | None = None,
    ) -> None:
        if not account_sid or not auth_token:
            raise ValueError("account_sid and auth_token are required")
        if not from_number and not messaging_service_sid:
            raise ValueError("one of from_number or messaging_service_sid is required")
        if timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        # A messaging service picks the sender from its pool; like the
        # CLARION_TWILIO_MESSAGING_SERVICE_SID setting, it wins over from_number.
        self._sender: dict[str, str] = (
            {"messaging_service_sid": messaging_service_sid}
            if messaging_service_sid
            else {"from_": from_number or ""}
        )
        self._status_callback = status_callback
        self._http = _OneShotHttpClient(timeout)
        self._client = Client(account_sid, auth_token, http_client=self._http)
        if base_url:
            self._client.api.base_url = base_url.rstrip("/")
            self._client.edge = None
            self._client.region = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TwilioProvider:
        """Build the provider from ``CLARION_TWILIO_*``; SettingsError names what is missing."""
        for variable, value in (
            ("CLARION_TWILIO_ACCOUNT_SID", settings.twilio_account_sid),
            ("CLARION_TWILIO_AUTH_TOKEN", settings.twilio_auth_token),
        ):
            if not value:
                raise SettingsError(variable, "required for SMS through Twilio")
        if not settings.twilio_from and not settings.twilio_messaging_service_sid:
            raise SettingsError(
                "CLARION_TWILIO_FROM",
                "set it or CLARION_TWILIO_MESSAGING_SERVICE_SID for SMS through Twilio",
            )
        return cls(
            account_sid=settings.twilio_account_sid or "",
            auth_token=settings.twilio_auth_token or "",
            from_number=settings.twilio_from,
            messaging_service_sid=settings.twilio_messaging_service_sid,
            base_url=settings.twilio_base_url,
            timeout=settings.provider_timeout,
            status_callback=_status_callback(settings),
        )

    @classmethod
    def backup_from_settings(cls, settings: Settings) -> TwilioProvider:
        """``twilio_backup`` from ``CLARION_TWILIO_BACKUP_*``: a second account, or the
        first account with another sender (number or messaging service)."""
        if not settings.twilio_backup_from and not settings.twilio_backup_messaging_service_sid:
            raise SettingsError(
                "CLARION_TWILIO_BACKUP_FROM",
                "set it or CLARION_TWILIO_BACKUP_MESSAGING_SERVICE_SID for twilio_backup",
            )
        account_sid = settings.twilio_backup_account_sid or settings.twilio_account_sid
        auth_token = settings.twilio_backup_auth_token or settings.twilio_auth_token
        if not account_sid or not auth_token:
            raise SettingsError(
                "CLARION_TWILIO_BACKUP_ACCOUNT_SID",
                "required for twilio_backup (or CLARION_TWILIO_ACCOUNT_SID to share the account)",
            )
        return TwilioBackupProvider(
            account_sid=account_sid,
            auth_token=auth_token,
            from_number=settings.twilio_backup_from,
            messaging_service_sid=settings.twilio_backup_messaging_service_sid,
            base_url=settings.twilio_base_url,
            timeout=settings.provider_timeout,
            status_callback=_status_callback(settings),
        )

    def send(self, message: OutgoingMessage) -> Receipt:
        if not is_valid_e164(message.to):
            raise BadAddressError(
                "twilio: address is not an E.164 phone number",
                provider=self.name,
                disable_address=True,
                response={"error": "invalid_e164"},
            )
        text = sms_text(message)
        if len(text) > MAX_BODY:
            raise PermanentError(
                f"twilio: SMS text is {len(text)} characters, over Twilio's {MAX_BODY}",
                provider=self.name,
                response={"error": "body_too_long", "length": len(text)},
            )
        too_large = limits.overrun(message)
        if too_large is not None:
            raise limits.too_large_error(self.name, too_large)
        extra: dict[str, str] = dict(self._sender)
        if self._status_callback:
            extra["status_callback"] = self._status_callback
        try:
            sent = self._client.messages.create(to=message.to, body=text, **extra)
        except TwilioException as exc:
            raise self._error_from_twilio(exc) from exc
        except requests.RequestException as exc:
            raise requests_error("twilio", exc, provider=self.name) from exc
        except ValueError as exc:
            # A 2xx whose body is not JSON (a proxy's page): Twilio may have
            # accepted the message, but there is no SID to prove it.
            raise RetryableError(
                "twilio: unreadable answer", provider=self.name, response={"error": "bad_json"}
            ) from exc
        code = sent.error_code
        response = {
            "sid": sent.sid,
            "status": None if sent.status is None else str(sent.status),
            "error_code": None if code is None else int(code),
            "error_message": None if sent.error_message is None else _redact(sent.error_message),
        }
        log.info(
            "twilio accepted notification_id=%s delivery_id=%s sid=%s status=%s",
            message.notification_id,
            message.delivery_id,
            sent.sid,
            response["status"],
        )
        return Receipt(provider=self.name, provider_message_id=sent.sid, response=response)

    def close(self) -> None:
        self._http.session.close()

    # --- error mapping ------------------------------------------------------------
    def _error_from_twilio(self, exc: TwilioException) -> ChannelError:
        # TwilioRestException (legacy error JSON) and TwilioServiceException
        # (RFC 9457 problem details) both carry status and code; neither is a
        # subclass of the other. A bare TwilioException has neither.
        status: int | None = getattr(exc, "status", None)
        code: int | None = getattr(exc, "code", None)
        if code == status:  # the SDK's stand-in when the body had no Twilio code
            code = None
        text = (
            getattr(exc, "msg", None) or getattr(exc, "detail", None) or getattr(exc, "title", "")
        )
        response: dict[str, Any] = {"status": status, "code": code}
        if text:
            response["message"] = _redact(str(text))
        headers = getattr(self._http.last_response, "headers", None) or {}
        retry_after = parse_retry_after(headers.get("Retry-After"))
        if retry_after is not None:
            response["retry_after"] = retry_after
        described = f"twilio: HTTP {status} code {code}"
        kwargs: dict[str, Any] = {"provider": self.name, "response": response}

        if status is None:
            return PermanentError(f"twilio: {type(exc).__name__}", **kwargs)
        transient = transient_http_error(
            status,
            described,
            retry_after=retry_after,
            throttled=code == TOO_MANY_REQUESTS,
            retry_after_throttles=on_5xx,
            **kwargs,
        )
        if transient is not None:
            return transient
        if status in (401, 403):
            return PermanentError(f"{described} (credentials or account)", **kwargs)
        if code in BAD_ADDRESS_CODES:
            return BadAddressError(described, disable_address=BAD_ADDRESS_CODES[code], **kwargs)
        return PermanentError(described, **kwargs)


class TwilioBackupProvider(TwilioProvider):
    """The second provider of the SMS chain (``CLARION_SMS_PROVIDERS=twilio,twilio_backup``):
    another Twilio account or messaging service, named apart in the attempt history and
    with a circuit breaker of its own."""

    name = "twilio_backup"


def _status_callback(settings: Settings) -> str | None:
    if settings.twilio_status_callback and settings.public_base_url:
        return settings.public_base_url + STATUS_CALLBACK_PATH
    return None


def sms_text(message: OutgoingMessage) -> str:
    """The SMS text: title line (unless empty or repeated by the body), body, action URL."""
    return limits.sms_text(message.title, message.body, message.action_url)
