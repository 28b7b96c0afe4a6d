"""A local Firebase Cloud Messaging: the HTTP v1 API and its OAuth2 token endpoint.

The real ``pyfcm`` + ``google-auth`` stack talks to it fully offline::

    sandbox = FCMSandbox(project_id="clarion-test").start()
    key = sandbox.write_service_account(tmp_path / "sa.json")
    provider = FCMProvider(service_account_file=key, project_id="clarion-test",
                           endpoint=sandbox.endpoint)

Two routes:

* ``POST /token``: the service account's ``token_uri``. google-auth posts a
  JWT bearer grant signed with the account's key; the sandbox checks the JWT
  (issuer, audience, expiry and, for keys it was told to trust, the RS256
  signature) and answers ``{"access_token", "expires_in": 3600, "token_type"}``.
* ``POST /v1/projects/{project}/messages:send``: checks the Bearer token, the
  project and the message, then answers ``{"name": "projects/P/messages/ID"}``.
  Errors use Google's JSON error shape with an ``FcmError`` detail, as FCM does.

Knobs besides the base class's :class:`~channels.sandboxes.http.Fault`:
:meth:`FCMSandbox.unregister` (a token answers 404 UNREGISTERED from then on)
and :meth:`FCMSandbox.revoke_tokens` (every access token issued so far answers
401, as an expired one does). Only ``messages:send`` requests that were
accepted land in ``sent``; token requests never do, and
``Fault(path_contains="messages:send")`` spares the token endpoint.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from channels.sandboxes.http import HTTPSandbox, RecordedRequest, Response

#: google-auth always puts Google's token endpoint in the JWT's ``aud``,
#: whatever the service account's token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
TOKEN_LIFETIME = 3600
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"

_SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
# Real registration tokens are ~150+ characters of base64url with a colon;
# the sandbox accepts shorter ones so tests can use readable tokens.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_:\-]{8,4096}$")
_RESERVED_DATA_KEYS = {"from", "notification", "message_type"}

# google.rpc status and the FcmError code of each HTTP status FCM answers.
_GOOGLE_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_FCM_ERROR_CODE = {
    400: "INVALID_ARGUMENT",
    403: "SENDER_ID_MISMATCH",
    404: "UNREGISTERED",
    429: "QUOTA_EXCEEDED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
_DEFAULT_MESSAGE = {
    400: "Request contains an invalid argument.",
    401: (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential."
    ),
    403: "SenderId mismatch",
    404: "Requested entity was not found.",
    429: "Quota exceeded for quota metric 'Send requests'.",
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}


def google_error(
    status: int,
    message: str | None = None,
    *,
    error_status: str | None = None,
    fcm_error: str | None = None,
    details: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Google's API error body; ``fcm_error`` adds FCM's ``FcmError`` detail."""
    error: dict[str, Any] = {
        "code": status,
        "message": message or _DEFAULT_MESSAGE.get(status, f"HTTP {status}"),
        "status": error_status or _GOOGLE_STATUS.get(status, "UNKNOWN"),
    }
    all_details = list(details or [])
    if fcm_error:
        all_details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_error})
    if all_details:
        error["details"] = all_details
    return {"error": error}


def write_fake_service_account(
    path: str | Path,
    token_uri: str,
    project_id: str,
    *,
    client_email: str | None = None,
) -> Path:
    """Write a service-account JSON with a fresh 2048-bit RSA key; returns the path.

    google-auth signs its token requests with that key and sends them to
    ``token_uri``, so pointed at a sandbox the whole OAuth2 flow stays local.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    email = client_email or f"clarion-sandbox@{project_id}.iam.gserviceaccount.com"
    info = {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**21)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
        "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
        "client_x509_cert_url": f"https://www.googleapis.com/robot/v1/metadata/x509/{email}",
        "universe_domain": "googleapis.com",
    }
    target = Path(path)
    target.write_text(json.dumps(info, indent=2))
    target.chmod(0o600)  # it holds a private key, fake or not
    return target


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class FCMSandbox(HTTPSandbox):
    """FCM HTTP v1 and its token endpoint on loopback; ``sent`` holds accepted messages."""

    name = "fcm"

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, *, project_id: str = "clarion-test"
    ) -> None:
        super().__init__(host, port)
        self.project_id = project_id
        #: The ``message`` object of every accepted send, in order.
        self.sent: list[dict[str, Any]] = []
        self._unregistered: set[str] = set()
        self._access_tokens: dict[str, float] = {}  # token -> expiry (epoch seconds)
        self._trusted: dict[str, rsa.RSAPublicKey] = {}  # client_email -> public key
        # Not the base class's lock: reset() calls on_reset() while holding it.
        self._state_lock = threading.Lock()

    @property
    def token_uri(self) -> str:
        return f"{self.url}/token"

    @property
    def endpoint(self) -> str:
        """The base URL pyfcm puts before ``/{project}/messages:send``."""
        return f"{self.url}/v1/projects"

    # --- knobs ------------------------------------------------------------------
    def write_service_account(self, path: str | Path) -> Path:
        """A fake service account whose token_uri is this sandbox, and trust its key."""
        written = write_fake_service_account(path, self.token_uri, self.project_id)
        self.trust(written)
        return written

    def trust(self, service_account_file: str | Path) -> None:
        """Verify JWT signatures of that account's key from now on (others: shape only)."""
        info = json.loads(Path(service_account_file).read_text())
        key = serialization.load_pem_private_key(info["private_key"].encode(), password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("service account key is not an RSA key")
        with self._state_lock:
            self._trusted[info["client_email"]] = key.public_key()

    def unregister(self, token: str) -> None:
        """From now on, sends to ``token`` answer 404 UNREGISTERED (an uninstalled app)."""
        with self._state_lock:
            self._unregistered.add(token)

    def revoke_tokens(self) -> None:
        """Every access token issued so far is refused with 401, as an expired one is."""
        with self._state_lock:
            self._access_tokens = dict.fromkeys(self._access_tokens, 0.0)

    def on_reset(self) -> None:
        # Issued access tokens and trusted keys survive: a reset between tests
        # should not force every client to fetch a new token.
        with self._state_lock:
            self.sent.clear()
            self._unregistered.clear()

    # --- the protocol -----------------------------------------------------------
    def handle(self, request: RecordedRequest) -> Response:
        path = request.path.split("?", 1)[0]
        if path == "/token" and request.method == "POST":
            return self._token(request)
        match = _SEND_PATH.match(path)
        if match is not None and request.method == "POST":
            return self._send(request, match["project"])
        return Response(
            404, google_error(404, f"The requested URL {path} was not found on this server.")
        )

    def _token(self, request: RecordedRequest) -> Response:
        form = {k: v[-1] for k, v in parse_qs(request.body.decode("utf-8", "replace")).items()}
        if form.get("grant_type") != JWT_BEARER_GRANT:
            return Response(
                400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
            )
        problem = self._check_assertion(form.get("assertion", ""))
        if problem:
            return Response(400, {"error": "invalid_grant", "error_description": problem})
        token = "ya29.sandbox-" + secrets.token_urlsafe(32)
        with self._state_lock:
            self._access_tokens[token] = time.time() + TOKEN_LIFETIME
        return Response(
            200, {"access_token": token, "expires_in": TOKEN_LIFETIME, "token_type": "Bearer"}
        )

    def _check_assertion(self, assertion: str) -> str | None:
        """None if the JWT grant is acceptable, else Google's error description."""
        parts = assertion.split(".")
        if len(parts) != 3:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        try:
            header = json.loads(_b64url_decode(parts[0]))
            claims = json.loads(_b64url_decode(parts[1]))
            signature = _b64url_decode(parts[2])
        except (ValueError, binascii.Error):
            return "Invalid JWT Signature."
        if header.get("alg") != "RS256" or not claims.get("iss"):
            return "Invalid JWT Signature."
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "Invalid JWT: Failed audience check."
        now = time.time()
        if not (claims.get("iat", 0) - 300 <= now < claims.get("exp", 0)):
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        with self._state_lock:
            trusted = dict(self._trusted)
        if trusted:
            key = trusted.get(claims["iss"])
            if key is None:
                return "Invalid grant: account not found"
            signed = f"{parts[0]}.{parts[1]}".encode()
            try:
                key.verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                return "Invalid JWT Signature."
        return None

    def _send(self, request: RecordedRequest, project: str) -> Response:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        with self._state_lock:
            expiry = self._access_tokens.get(token) if scheme.lower() == "bearer" else None
        if expiry is None:
            return Response(401, google_error(401))
        if expiry <= time.time():
            return Response(
                401,
                google_error(
                    401,
                    details=[
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "ACCESS_TOKEN_EXPIRED",
                            "domain": "googleapis.com",
                            "metadata": {"service": "fcm.googleapis.com"},
                        }
                    ],
                ),
            )
        if project != self.project_id:
            return Response(
                403,
                google_error(
                    403,
                    "Permission 'cloudmessaging.messages.create' denied on resource "
                    f"'//cloudresourcemanager.googleapis.com/projects/{project}' "
                    "(or it may not exist).",
                ),
            )
        try:
            document = json.loads(request.body)
        except ValueError:
            return Response(400, google_error(400, "Invalid JSON payload received."))
        message = document.get("message") if isinstance(document, dict) else None
        if not isinstance(message, dict):
            return Response(
                400, google_error(400, 'Invalid JSON payload received. Unknown name "message".')
            )
        problem = self._check_message(message)
        if problem is not None:
            return problem
        device_token = message.get("token")
        with self._state_lock:
            unregistered = device_token in self._unregistered
        if unregistered:
            return Response(404, google_error(404, fcm_error="UNREGISTERED"))
        if document.get("validate_only"):
            # A dry run is checked like a send but delivers nothing.
            return Response(200, {"name": f"projects/{project}/messages/fake_message_id"})
        with self._state_lock:
            self.sent.append(message)
        message_id = f"0:{time.time_ns() // 1000}%{secrets.token_hex(8)}"
        return Response(200, {"name": f"projects/{project}/messages/{message_id}"})

    def _check_message(self, message: dict[str, Any]) -> Response | None:
        targets = [key for key in ("token", "topic", "condition") if message.get(key)]
        if len(targets) != 1:
            return Response(
                400,
                google_error(
                    400, "Recipient of the message is not set.", fcm_error="INVALID_ARGUMENT"
                ),
            )
        token = message.get("token")
        if token is not None and not (isinstance(token, str) and _TOKEN_SHAPE.match(token)):
            return Response(
                400,
                google_error(
                    400,
                    "The registration token is not a valid FCM registration token",
                    fcm_error="INVALID_ARGUMENT",
                ),
            )
        data = message.get("data", {})
        if not isinstance(data, dict):
            return Response(
                400,
                google_error(400, "Invalid value at 'message.data'", fcm_error="INVALID_ARGUMENT"),
            )
        for index, (key, value) in enumerate(data.items()):
            # FCM's data map is string to string: anything else is refused.
            if not isinstance(value, str):
                field = f"message.data[{index}].value"
                description = f"Invalid value at '{field}' (TYPE_STRING), {json.dumps(value)}"
                violation = {
                    "@type": "type.googleapis.com/google.rpc.BadRequest",
                    "fieldViolations": [{"field": field, "description": description}],
                }
                return Response(400, google_error(400, description, details=[violation]))
            if key in _RESERVED_DATA_KEYS or key.startswith(("google", "gcm")):
                return Response(
                    400,
                    google_error(
                        400, f"Invalid data payload key: {key}", fcm_error="INVALID_ARGUMENT"
                    ),
                )
        return None

    def fault_response(
        self, request: RecordedRequest, status: int, body: Any, headers: dict[str, str]
    ) -> Response:
        """Injected failures in Google's error shape.

        ``body=None`` gives FCM's usual answer for ``status`` (429
        QUOTA_EXCEEDED, 503 UNAVAILABLE, ...). A dict with any of ``message``,
        ``status``, ``errorCode`` (None drops the FcmError detail) and
        ``details`` adjusts it, e.g. ``{"errorCode": "SENDER_ID_MISMATCH"}``; a
        dict with ``error`` is sent as is, and so is a str or bytes body (a
        Google front end's HTML 502 page).
        """
        if isinstance(body, str | bytes):
            return Response(status, body, {"Content-Type": "text/html; charset=UTF-8", **headers})
        if isinstance(body, dict) and "error" in body:
            return Response(status, body, headers)
        spec = body if isinstance(body, dict) else {}
        error = google_error(
            status,
            spec.get("message"),
            error_status=spec.get("status"),
            fcm_error=spec.get("errorCode", _FCM_ERROR_CODE.get(status)),
            details=spec.get("details"),
        )
        return Response(status, error, headers)
