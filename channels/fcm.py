"""Push notifications through Firebase Cloud Messaging HTTP v1, with ``pyfcm`` 2.x.

pyfcm builds the message JSON and knows the endpoint; its transport does not
suit a worker, so :class:`_OneShotFCM` replaces it:

* pyfcm's default adapter retries 502/503 ten times with backoff, and its
  ``send_request`` sleeps for any ``Retry-After`` (no cap, no limit) and
  recurses: ours mounts ``HTTPAdapter(max_retries=0)``, makes one POST with
  our timeout and hands Retry-After to our error.
* pyfcm maps every 403 to "sender id mismatch" and every 404 to "not
  registered", and drops the body and headers: we map the status, Google's
  error status and FCM's ``errorCode`` ourselves.
* pyfcm refreshes the OAuth2 token every 30 minutes per thread whatever its
  expiry, through google-auth with no timeout we control (120 s default), and
  turns any failure into ``InvalidDataError``; google-auth itself retries a
  failing token endpoint three times with sleeps. Ours lets google-auth
  refresh when the token is about to expire (``Credentials.before_request``),
  with our timeout, and fails at once on a 5xx/429 from the token endpoint.
* pyfcm prefers the project id of the service account over an explicit
  ``project_id``: ours uses the explicit one when given.

One request per token: ``message.to`` is one registration token.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import google.auth.exceptions
import google.auth.transport
import google.auth.transport.requests
import requests
from pyfcm import FCMNotification
from pyfcm.errors import FCMError, FCMServerError
from requests.adapters import HTTPAdapter

from channels import limits
from channels.base import (
    MAX_ERROR_TEXT,
    BadAddressError,
    ChannelError,
    OutgoingMessage,
    PermanentError,
    Provider,
    Receipt,
    RetryableError,
    ThrottledError,
    parse_retry_after,
)
from channels.http_status import on_5xx_or_408, transient_http_error
from channels.requests_errors import requests_error
from clarion.core.errors import SettingsError
from models.enums import Channel

if TYPE_CHECKING:
    from google.auth.credentials import Credentials

    from clarion.core.settings import Settings

log = logging.getLogger(__name__)

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
SCOPES = ["https://www.googleapis.com/auth/firebase.messaging"]
# Keys FCM refuses in the data map (https://firebase.google.com/docs/cloud-messaging/concept-options).
_RESERVED_DATA_KEYS = frozenset({"from", "notification", "message_type"})
_RESERVED_DATA_PREFIXES = ("google", "gcm")
_TOKEN_SHAPE = re.compile(r"^\S{1,4096}$")
# OAuth2 error codes the token endpoint uses for transient trouble (RFC 6749).
_TRANSIENT_OAUTH_ERRORS = frozenset({"internal_failure", "server_error", "temporarily_unavailable"})
# 401s that are about APNs / web push credentials, not about our access token.
_THIRD_PARTY_AUTH = frozenset({"THIRD_PARTY_AUTH_ERROR", "APNS_AUTH_ERROR"})


class _FCMHTTPError(Exception):
    """FCM answered something other than 200; carries the response for mapping."""

    def __init__(self, response: requests.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class _TokenEndpointUnavailable(google.auth.exceptions.TransportError):
    """The OAuth2 token endpoint answered a transient error (5xx, 429)."""

    def __init__(self, status: int, retry_after: float | None) -> None:
        super().__init__(f"token endpoint answered HTTP {status}")  # type: ignore[no-untyped-call]
        self.status = status
        self.retry_after = retry_after


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our timeout and without its token retries.

    google-auth retries a token endpoint answering 5xx/429 (three attempts,
    sleeping between them) but never an exception raised by the transport, so
    raising here is the public way to make that one attempt.
    """

    def __init__(self, timeout: float) -> None:
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        super().__init__(session)
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: Any = None,
        headers: Any = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> google.auth.transport.Response:
        response: google.auth.transport.Response = super().__call__(  # type: ignore[no-untyped-call]
            url, method=method, body=body, headers=headers, timeout=self._timeout, **kwargs
        )
        if response.status in google.auth.transport.DEFAULT_RETRYABLE_STATUS_CODES or (
            response.status != 200 and _transient_oauth_error(response.data)
        ):
            retry_after = parse_retry_after((response.headers or {}).get("Retry-After"))
            raise _TokenEndpointUnavailable(response.status, retry_after)
        return response


def _transient_oauth_error(data: Any) -> bool:
    try:
        body = json.loads(data)
    except (TypeError, ValueError):
        return False
    if not isinstance(body, dict):
        return False
    return bool({body.get("error"), body.get("error_description")} & _TRANSIENT_OAUTH_ERRORS)


class _OneShotFCM(FCMNotification):  # type: ignore[misc]  # pyfcm is untyped
    """``FCMNotification`` making exactly one POST per send (see the module docstring)."""

    def __init__(
        self,
        *,
        service_account_file: str | None,
        credentials: Credentials | None,
        project_id: str | None,
        endpoint: str | None,
        timeout: float,
    ) -> None:
        super().__init__(
            service_account_file=service_account_file,
            project_id=project_id,
            credentials=credentials,
            adapter=HTTPAdapter(max_retries=0),
        )
        if endpoint:
            # An instance attribute shadows pyfcm's class attribute for this client only.
            self.FCM_END_POINT_BASE = endpoint.rstrip("/")
        # Read the key now: a missing or broken file fails at start-up, not on a send.
        self._initialize_credentials()
        project = project_id or getattr(self.credentials, "project_id", None)
        if not project:
            raise ValueError("project_id is required (none given and none in the credentials)")
        self.project = project
        self._send_url = f"{self.FCM_END_POINT_BASE}/{project}/messages:send"
        self._timeout = timeout
        self._token_request = _TokenRequest(timeout)
        # One refresh at a time: the credentials object is shared by all threads.
        self._token_lock = threading.Lock()

    @property
    def fcm_end_point(self) -> str:
        return self._send_url

    @property
    def requests_session(self) -> requests.Session:
        # pyfcm's version also puts a bearer token in the session's headers and
        # renews it on a fixed 30-minute clock: we set it per request instead.
        session: requests.Session | None = getattr(self.thread_local, "requests_session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", self.custom_adapter)
            session.mount("https://", self.custom_adapter)
            self.thread_local.requests_session = session
        return session

    def request_headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        with self._token_lock:
            # Refreshes the token only when it is missing or about to expire.
            self.credentials.before_request(self._token_request, "POST", self._send_url, headers)
        return headers

    def send_request(self, payload: Any = None, timeout: float | None = None) -> requests.Response:
        """One POST; returns a 200 response or raises :class:`_FCMHTTPError`.

        The only second POST: a 401 for a token that was cached (revoked or
        expired early) is replayed once with a freshly minted token, as
        google-auth's own ``AuthorizedSession`` does. The first POST was
        refused, so the replay cannot send the message twice.
        """
        with self._token_lock:
            cached = self.credentials.token
        headers = self.request_headers()
        response = self._post(payload, headers, timeout)
        used = headers.get("authorization", "")
        if (
            response.status_code == 401
            and cached
            and used == f"Bearer {cached}"
            and _error_info(response)[1] not in _THIRD_PARTY_AUTH
        ):
            log.info("fcm: access token refused, fetching a new one")
            with self._token_lock:
                if self.credentials.token == cached:  # another thread may have renewed it
                    self.credentials.refresh(self._token_request)
            response = self._post(payload, self.request_headers(), timeout)
        if response.status_code != 200:
            raise _FCMHTTPError(response)
        return response

    def _post(
        self, payload: Any, headers: dict[str, str], timeout: float | None
    ) -> requests.Response:
        return self.requests_session.post(
            self._send_url, data=payload, headers=headers, timeout=timeout or self._timeout
        )

    def close(self) -> None:
        session = getattr(self.thread_local, "requests_session", None)
        if session is not None:
            session.close()
        self._token_request.session.close()


class FCMProvider(Provider):
    """Sends an :class:`OutgoingMessage` as one FCM notification to one registration token.

    The notification shows ``title`` and ``body``; the data map carries
    ``message.data`` plus ``notification_id`` (and ``action_url`` when set),
    all strings as FCM requires.
    """

    name = "fcm"
    channel = Channel.PUSH

    def __init__(
        self,
        *,
        service_account_file: str | Path | None = None,
        credentials: Credentials | None = None,
        project_id: str | None = None,
        endpoint: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        if (service_account_file is None) == (credentials is None):
            raise ValueError("give exactly one of service_account_file or credentials")
        if timeout <= 0:
            raise ValueError("timeout must be greater than 0")
        self._timeout = timeout
        self._fcm = _OneShotFCM(
            service_account_file=None
            if service_account_file is None
            else str(service_account_file),
            credentials=credentials,
            project_id=project_id,
            endpoint=endpoint,
            timeout=timeout,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> FCMProvider:
        """Build the provider from ``CLARION_FCM_*``; SettingsError names what is missing."""
        if not settings.fcm_service_account_file:
            raise SettingsError("CLARION_FCM_SERVICE_ACCOUNT_FILE", "required for push through FCM")
        try:
            return cls(
                service_account_file=settings.fcm_service_account_file,
                project_id=settings.fcm_project_id,
                endpoint=settings.fcm_endpoint,
                timeout=settings.provider_timeout,
            )
        except (FCMError, ValueError) as exc:
            raise SettingsError("CLARION_FCM_SERVICE_ACCOUNT_FILE", str(exc)) from exc

    @property
    def project_id(self) -> str:
        return self._fcm.project

    def send(self, message: OutgoingMessage) -> Receipt:
        if not _TOKEN_SHAPE.match(message.to):
            raise BadAddressError(
                "fcm: address is not a registration token",
                provider=self.name,
                disable_address=True,
                response={"error": "invalid_token_shape"},
            )
        too_large = limits.overrun(message)
        if too_large is not None:
            raise limits.too_large_error(self.name, too_large)
        data = self._data(message)
        try:
            result = self._fcm.notify(
                fcm_token=message.to,
                notification_title=message.title or None,
                notification_body=message.body or None,
                data_payload=data,
                # A collapsible notification (outbid, new bid) replaces the
                # previous one about the same auction on the device.
                android_config=(
                    {"collapse_key": message.collapse_key} if message.collapse_key else None
                ),
                apns_config=(
                    {"headers": {"apns-collapse-id": message.collapse_key}}
                    if message.collapse_key
                    else None
                ),
                timeout=self._timeout,
            )
        except _FCMHTTPError as exc:
            raise _error_from_response(exc.response) from exc
        except google.auth.exceptions.GoogleAuthError as exc:
            raise _error_from_auth(exc) from exc
        except requests.RequestException as exc:
            raise _error_from_requests(exc) from exc
        except FCMServerError as exc:  # a 200 with an empty body
            raise RetryableError(
                "fcm: empty answer", provider=self.name, response={"error": "empty_response"}
            ) from exc
        except FCMError as exc:  # pyfcm refused to build the payload
            raise PermanentError.from_exception("fcm", exc, provider=self.name) from exc
        name = result.get("name") if isinstance(result, dict) else None
        log.info(
            "fcm accepted notification_id=%s delivery_id=%s name=%s",
            message.notification_id,
            message.delivery_id,
            name,
        )
        return Receipt(
            provider=self.name,
            provider_message_id=name if isinstance(name, str) else None,
            response={"name": name},
        )

    def close(self) -> None:
        self._fcm.close()

    def _data(self, message: OutgoingMessage) -> dict[str, str]:
        data: dict[str, str] = {}
        extra: Mapping[str, str | None] = {
            "notification_id": str(message.notification_id),
            "action_url": message.action_url,
        }
        for key, value in [*message.data.items(), *extra.items()]:
            if value is None or key in data:
                continue
            # FCM refuses these with a 400: fail before spending a request.
            if not isinstance(key, str) or not isinstance(value, str):
                raise PermanentError(
                    "fcm: data keys and values must be strings",
                    provider=self.name,
                    response={"error": "non_string_data", "key": str(key)},
                )
            if key in _RESERVED_DATA_KEYS or key.startswith(_RESERVED_DATA_PREFIXES):
                raise PermanentError(
                    f"fcm: data key {key!r} is reserved by FCM",
                    provider=self.name,
                    response={"error": "reserved_data_key", "key": key},
                )
            data[key] = value
        return data


# --- error mapping ----------------------------------------------------------------
def _error_info(response: requests.Response) -> tuple[str | None, str | None, str, list[Any]]:
    """(google status, FCM errorCode, message, details) of a Google API error body."""
    try:
        body = response.json()
    except ValueError:
        return None, None, "", []
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None, "", []
    raw_details = error.get("details")
    details: list[Any] = raw_details if isinstance(raw_details, list) else []
    fcm_code = next(
        (
            str(d.get("errorCode"))
            for d in details
            if isinstance(d, dict) and d.get("@type") == FCM_ERROR_TYPE
        ),
        None,
    )
    status = error.get("status")
    return (
        None if status is None else str(status),
        fcm_code,
        str(error.get("message") or ""),
        details,
    )


def _is_bad_token(message: str, details: list[Any]) -> bool:
    # FCM answers a malformed token with a plain INVALID_ARGUMENT; only the
    # message or a field violation on message.token tells it from a bad payload.
    if "registration token" in message.lower():
        return True
    for detail in details:
        for violation in detail.get("fieldViolations", []) if isinstance(detail, dict) else []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                return True
    return False


def _error_from_response(response: requests.Response) -> ChannelError:
    status = response.status_code
    google_status, fcm_code, text, details = _error_info(response)
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    summary: dict[str, Any] = {
        "status": status,
        "error_status": google_status,
        "error_code": fcm_code,
    }
    if text:
        summary["message"] = text[:MAX_ERROR_TEXT]
    if retry_after is not None:
        summary["retry_after"] = retry_after
    described = f"fcm: HTTP {status} {fcm_code or google_status or ''}".rstrip()
    kwargs: dict[str, Any] = {"provider": FCMProvider.name, "response": summary}

    transient = transient_http_error(
        status, described, retry_after=retry_after, retry_after_throttles=on_5xx_or_408, **kwargs
    )
    if transient is not None:
        return transient
    # Disable a token only on FCM's explicit word for it: a bare 404 (a wrong
    # endpoint, a proxy) must not disable every token we send to.
    if fcm_code == "UNREGISTERED":
        return BadAddressError(described, disable_address=True, **kwargs)
    if fcm_code == "SENDER_ID_MISMATCH":  # the token belongs to another project
        return BadAddressError(described, disable_address=True, **kwargs)
    if status == 400 and fcm_code in (None, "INVALID_ARGUMENT") and _is_bad_token(text, details):
        return BadAddressError(described, disable_address=True, **kwargs)
    # 400 other INVALID_ARGUMENT (payload), 401 (credentials, APNs / web push
    # auth; a stale token was already replayed once), 403 PERMISSION_DENIED
    # (project), other 404: our request or configuration, not transient.
    return PermanentError(described, **kwargs)


def _error_from_auth(exc: google.auth.exceptions.GoogleAuthError) -> ChannelError:
    kwargs: dict[str, Any] = {"provider": FCMProvider.name}
    if isinstance(exc, _TokenEndpointUnavailable):
        response: dict[str, Any] = {"error": "token_endpoint", "status": exc.status}
        if exc.status == 429 or exc.retry_after is not None:
            response["retry_after"] = exc.retry_after
            return ThrottledError(
                f"fcm: token endpoint HTTP {exc.status}",
                retry_after=exc.retry_after,
                response=response,
                **kwargs,
            )
        return RetryableError(f"fcm: token endpoint HTTP {exc.status}", response=response, **kwargs)
    if isinstance(exc, google.auth.exceptions.TransportError):  # timeout, refused connection
        return RetryableError(
            "fcm: token endpoint unreachable", response={"error": "token_transport"}, **kwargs
        )
    if exc.retryable:
        return RetryableError(
            "fcm: token refresh failed", response={"error": "token_refresh"}, **kwargs
        )
    # invalid_grant and friends: a revoked key, a wrong account. Our configuration.
    # The error text names the account and Google's reason, never the key.
    reason = str(exc.args[0]) if exc.args else type(exc).__name__
    return PermanentError(
        f"fcm: token refresh refused: {reason[:200]}", response={"error": "token_refused"}, **kwargs
    )


def _error_from_requests(exc: requests.RequestException) -> ChannelError:
    if isinstance(exc, requests.exceptions.JSONDecodeError):
        # A 200 that is not JSON: FCM may have accepted it, but there is no name.
        return RetryableError(
            "fcm: unreadable answer",
            provider=FCMProvider.name,
            response={"error": type(exc).__name__},
        )
    return requests_error("fcm", exc, provider=FCMProvider.name)
