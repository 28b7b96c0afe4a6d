"""A local Amazon SES v2 endpoint that real boto3 ``sesv2`` clients can talk to.

It speaks the REST-JSON protocol of botocore's ``sesv2`` service model for the
calls Clarion makes::

    POST /v2/email/outbound-emails   SendEmail          -> {"MessageId": ...}
    POST /v2/email/identities        CreateEmailIdentity (accepted, always verified)

Errors are shaped the way botocore's ``RestJSONParser`` reads them: the error
code in the ``x-amzn-ErrorType`` header, ``{"message": ...}`` in the body and
the request id in ``x-amzn-RequestId``. An injected ``Fault`` becomes the SES
error of its status (429 ``TooManyRequestsException``, 400
``BadRequestException``, 404 ``NotFoundException``, 5xx ``InternalFailure``),
or the one named by ``Fault(body={"__type": "MessageRejected", "message": ...})``.

Usage::

    with SESSandbox() as ses:
        client = boto3.client("sesv2", endpoint_url=ses.url, ...)
        ses.fail(Fault(status=429, retry_after=2))
        ...
        ses.sent  # the SendEmail requests accepted, as parsed JSON
"""

from __future__ import annotations

import base64
import email
import email.message
import email.policy
import json
import time
import uuid
from typing import Any

from channels.sandboxes.http import HTTPSandbox, RecordedRequest, Response

SEND_PATH = "/v2/email/outbound-emails"
IDENTITIES_PATH = "/v2/email/identities"

_ERROR_BY_STATUS = {
    400: "BadRequestException",
    404: "NotFoundException",
    429: "TooManyRequestsException",
}
# Real SES suffixes the code with the coral namespace; botocore strips it, and
# sending it exercises that stripping.
_ERROR_NAMESPACE = "http://internal.amazon.com/coral/com.amazonaws.sesv2/"


def _request_id() -> str:
    return str(uuid.uuid4())


def _error(status: int, code: str, message: str) -> Response:
    return Response(
        status,
        {"message": message},
        {"x-amzn-ErrorType": f"{code}:{_ERROR_NAMESPACE}", "x-amzn-RequestId": _request_id()},
    )


def raw_mime(payload: dict[str, Any]) -> email.message.Message:
    """The MIME message of a ``Raw`` SendEmail body, parsed by the standard library."""
    data = base64.b64decode(payload["Content"]["Raw"]["Data"], validate=True)
    return email.message_from_bytes(data, policy=email.policy.default)


class SESSandbox(HTTPSandbox):
    """SES v2 over HTTP on 127.0.0.1; ``sent`` holds every accepted SendEmail body."""

    name = "ses"

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(host, port)
        self.sent: list[dict[str, Any]] = []
        self.identities: set[str] = set()

    def __enter__(self) -> SESSandbox:
        self.start()
        return self

    def on_reset(self) -> None:
        # Called by reset() with the lock held.
        self.sent.clear()
        self.identities.clear()

    def handle(self, request: RecordedRequest) -> Response:
        path = request.path.split("?", 1)[0]
        if request.method == "POST" and path == SEND_PATH:
            return self._send_email(request)
        if request.method == "POST" and path == IDENTITIES_PATH:
            return self._create_identity(request)
        return _error(404, "UnknownOperationException", "unknown operation")

    def fault_response(
        self, request: RecordedRequest, status: int, body: Any, headers: dict[str, str]
    ) -> Response:
        code = _ERROR_BY_STATUS.get(
            status, "InternalFailure" if status >= 500 else "BadRequestException"
        )
        message = f"injected {status}"
        if isinstance(body, dict):
            code = str(body.get("__type", code))
            message = str(body.get("message", message))
        elif isinstance(body, str):
            message = body
        response = _error(status, code, message)
        response.headers.update(headers)  # Retry-After and any custom header
        return response

    # --- operations ---------------------------------------------------------------
    def _send_email(self, request: RecordedRequest) -> Response:
        try:
            payload = request.json()
        except ValueError:
            return _error(400, "BadRequestException", "request body is not JSON")
        if not isinstance(payload, dict) or not payload.get("FromEmailAddress"):
            return _error(400, "BadRequestException", "FromEmailAddress is required")
        destination = payload.get("Destination") or {}
        recipients = [
            *destination.get("ToAddresses", []),
            *destination.get("CcAddresses", []),
            *destination.get("BccAddresses", []),
        ]
        if not recipients:
            return _error(400, "BadRequestException", "at least one recipient is required")
        for address in recipients:
            # SES's own wording for unparsable addresses, which the provider
            # recognises as a bad recipient.
            if "@" not in address:
                return _error(400, "BadRequestException", "Missing final '@domain'")
            if any(c.isspace() for c in address):
                return _error(
                    400, "BadRequestException", "Local address contains control or whitespace"
                )
        content = payload.get("Content") or {}
        if "Template" in content:
            return _error(400, "BadRequestException", "templates are not supported here")
        if "Raw" in content:
            try:
                mail = raw_mime(payload)
            except (ValueError, KeyError, TypeError):
                return _error(400, "BadRequestException", "Raw.Data is not base64")
            if not mail.get("From"):
                return _error(400, "MessageRejected", "Raw message has no From header")
        message_id = f"0100{int(time.time() * 1000):x}-{uuid.uuid4()}-000000"
        with self._lock:
            self.sent.append(payload)
        return Response(200, {"MessageId": message_id}, {"x-amzn-RequestId": _request_id()})

    def _create_identity(self, request: RecordedRequest) -> Response:
        try:
            identity = str(json.loads(request.body)["EmailIdentity"])
        except (ValueError, KeyError, TypeError):
            return _error(400, "BadRequestException", "EmailIdentity is required")
        with self._lock:
            self.identities.add(identity)
        return Response(
            200,
            {
                "IdentityType": "EMAIL_ADDRESS" if "@" in identity else "DOMAIN",
                "VerifiedForSendingStatus": True,
                "DkimAttributes": {"SigningEnabled": False, "Status": "NOT_STARTED"},
            },
            {"x-amzn-RequestId": _request_id()},
        )
