"""A local Twilio: the Messages API of ``api.twilio.com`` on loopback.

The real ``twilio`` SDK talks to it once pointed there
(``client.api.base_url = sandbox.url``)::

    sandbox = TwilioSandbox().start()
    provider = TwilioProvider(account_sid=sandbox.account_sid,
                              auth_token=sandbox.auth_token,
                              from_number="+15005550006", base_url=sandbox.url)

It answers ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json`` (form
encoded, HTTP Basic auth) the way Twilio does: ``201`` with a message resource,
or Twilio's legacy error JSON ``{"code", "message", "more_info", "status"}``
(the form the SDK raises as ``TwilioRestException``). Besides the
:class:`~channels.sandboxes.http.Fault` knobs of the base class,
:meth:`TwilioSandbox.block` makes one number answer a given Twilio error code
(21610 for a recipient who replied STOP, 21614 for a landline, ...).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import re
import secrets
import threading
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qs

from channels.addresses import is_valid_e164
from channels.sandboxes.http import HTTPSandbox, RecordedRequest, Response

API_VERSION = "2010-04-01"
_MESSAGES_PATH = re.compile(rf"^/{API_VERSION}/Accounts/(?P<account>[^/]+)/Messages\.json$")
_MAX_BODY = 1600

#: Twilio's own wording for the errors the sandbox produces; ``block`` and
#: faults with a bare ``code`` reuse it so every error looks like Twilio's.
ERROR_MESSAGES: dict[int, str] = {
    20001: "Invalid request",
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "An internal server error has occurred",
    20503: "Service is unavailable. Please try again",
    21211: "Invalid 'To' Phone Number",
    21408: (
        "Permission to send an SMS has not been enabled for the region indicated by the 'To' number"
    ),
    21602: "Message body is required.",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
    21617: "The concatenated message body exceeds the 1600 character limit.",
}

# The code an injected fault gets when the test names only the HTTP status.
_DEFAULT_CODE_FOR_STATUS = {
    400: 20001,
    401: 20003,
    403: 20003,
    404: 20404,
    429: 20429,
    500: 20500,
    503: 20503,
}


def twilio_error(status: int, code: int, message: str | None = None) -> dict[str, Any]:
    """Twilio's error body (the legacy shape the Messages API still answers)."""
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, f"HTTP {status}"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def _segments(body: str) -> int:
    # GSM-7 approximated by ASCII: 160 characters in one part, 153 per part once
    # concatenated; anything else goes out as UCS-2 (70 / 67).
    single, multi = (160, 153) if body.isascii() else (70, 67)
    if len(body) <= single:
        return 1
    return -(-len(body) // multi)


class TwilioSandbox(HTTPSandbox):
    """Twilio's Messages API on loopback; ``sent`` holds the accepted forms."""

    name = "twilio"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        account_sid: str | None = None,
        auth_token: str | None = None,
    ) -> None:
        super().__init__(host, port)
        self.account_sid = account_sid or "AC" + secrets.token_hex(16)
        self.auth_token = auth_token or secrets.token_hex(16)
        #: The form of every accepted message (To, From, Body, ...), in order.
        self.sent: list[dict[str, str]] = []
        self._blocked: dict[str, int] = {}
        #: Further accounts answered beside the first (SID -> auth token).
        self.accounts: dict[str, str] = {}
        # Not the base class's lock: reset() calls on_reset() while holding it.
        self._state_lock = threading.Lock()

    # --- knobs ------------------------------------------------------------------
    def block(self, number: str, code: int = 21610) -> None:
        """Answer every later message to ``number`` with HTTP 400 and Twilio ``code``."""
        with self._state_lock:
            self._blocked[number] = code

    def add_account(self) -> tuple[str, str]:
        """Answer a second account too (a failover's backup); returns its SID and token.

        A fault with ``path_contains=f"/Accounts/{sid}/"`` hits one account only."""
        sid, token = "AC" + secrets.token_hex(16), secrets.token_hex(16)
        with self._state_lock:
            self.accounts[sid] = token
        return sid, token

    def on_reset(self) -> None:
        with self._state_lock:
            self.sent.clear()
            self._blocked.clear()

    # --- the protocol -----------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        path = request.path.split("?", 1)[0]
        match = _MESSAGES_PATH.match(path)
        if match is None or request.method != "POST":
            return Response(
                404, twilio_error(404, 20404, f"The requested resource {path} was not found")
            )
        # Twilio checks credentials before it looks at the request.
        if not self._authorized(request, match["account"]):
            return Response(401, twilio_error(401, 20003))

        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        to = form.get("To", "")
        body = form.get("Body", "")
        if not to:
            return Response(400, twilio_error(400, 21604))
        if not is_valid_e164(to):
            return Response(
                400, twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            )
        if not form.get("From") and not form.get("MessagingServiceSid"):
            return Response(400, twilio_error(400, 21603))
        if not body and not form.get("MediaUrl") and not form.get("ContentSid"):
            return Response(400, twilio_error(400, 21602))
        if len(body) > _MAX_BODY:
            return Response(400, twilio_error(400, 21617))
        with self._state_lock:
            blocked = self._blocked.get(to)
            if blocked is None:
                self.sent.append(form)
        if blocked is not None:
            return Response(400, twilio_error(400, blocked))
        return Response(201, self._message_resource(match["account"], form))

    def _authorized(self, request: RecordedRequest, account: str) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        if account == self.account_sid:
            token = self.auth_token
        else:
            with self._state_lock:
                token = self.accounts.get(account, "")
        return (
            bool(token)
            and secrets.compare_digest(user, account)
            and secrets.compare_digest(password, token)
        )

    def _message_resource(self, account: str, form: dict[str, str]) -> dict[str, Any]:
        sid = "SM" + secrets.token_hex(16)
        now = format_datetime(datetime.datetime.now(datetime.UTC).replace(microsecond=0))
        service = form.get("MessagingServiceSid")
        body = form.get("Body", "")
        uri = f"/{API_VERSION}/Accounts/{account}/Messages/{sid}"
        return {
            "account_sid": account,
            "api_version": API_VERSION,
            "body": body,
            "date_created": now,
            "date_sent": None,
            "date_updated": now,
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            # With a messaging service Twilio picks the sender later: "from" is
            # null and the status "accepted" until then.
            "from": form.get("From"),
            "messaging_service_sid": service,
            "num_media": "0",
            "num_segments": str(_segments(body)),
            "price": None,
            "price_unit": "USD",
            "sid": sid,
            "status": "accepted" if service and not form.get("From") else "queued",
            "subresource_uris": {"media": f"{uri}/Media.json"},
            "to": form["To"],
            "uri": f"{uri}.json",
        }

    def fault_response(
        self, request: RecordedRequest, status: int, body: Any, headers: dict[str, str]
    ) -> Response:
        """Injected failures in Twilio's error shape.

        ``body=None`` gives the usual code for ``status`` (20429 for 429, 20500
        for 500, ...); a dict is merged into that shape, so
        ``Fault(status=400, body={"code": 21211})`` is Twilio's invalid-'To'
        answer; a str or bytes body is sent as is (an HTML page from a proxy).
        """
        if isinstance(body, str | bytes):
            return Response(status, body, {"Content-Type": "text/html", **headers})
        default = _DEFAULT_CODE_FOR_STATUS.get(status, 20500 if status >= 500 else 20001)
        code = int(body.get("code", default)) if isinstance(body, dict) else default
        error = twilio_error(status, code)
        if isinstance(body, dict):
            error.update(body)
        return Response(status, error, headers)
