"""Webhooks: a JSON POST to the endpoint's URL, signed per Standard Webhooks.

The request (https://www.standardwebhooks.com)::

    POST <endpoint url>
    webhook-id: <idempotency key, the same on every retry of a delivery>
    webhook-timestamp: <unix seconds>
    webhook-signature: v1,<base64 HMAC-SHA256(secret, "{id}.{timestamp}.{body}")>

    {"type": "notification", "timestamp": "...Z", "data": {"notification_id": ..., ...}}

Endpoint URLs are written by tenants, so the adapter is an SSRF boundary: it
refuses non-http(s) URLs and any host that resolves to a loopback, private,
link-local, multicast, reserved or unspecified address (IPv4-mapped, 6to4 and
NAT64 forms included), unless ``allow_private``. The check runs inside the
connection's own TCP connect, on the very addresses it then connects to, so a
DNS answer that changes between check and connect (rebinding) cannot slip
through; TLS still verifies the certificate against the URL's host name.
Redirects are never followed (a 3xx could point anywhere); proxies from the
environment are ignored for the same reason.

Answer mapping::

    2xx                              -> Receipt(delivered=True)
    3xx                              -> PermanentError (redirect not followed)
    410 Gone                         -> BadAddressError(disable_address=True)
    429, 503 with Retry-After        -> ThrottledError(retry_after)
    408, 5xx, timeouts, conn. errors -> RetryableError
    other 4xx, refused address       -> PermanentError / BadAddressError
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import logging
import socket
import ssl
import time
import typing
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import httpcore
import httpx

from channels import limits
from channels.base import (
    JSON,
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    Provider,
    Receipt,
    RetryableError,
    parse_retry_after,
)
from channels.http_status import transient_http_error
from models.enums import Channel

if TYPE_CHECKING:
    from clarion.core.settings import Settings

logger = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SECRET_PREFIX = "whsec_"  # noqa: S105 - the format's prefix, not a secret
#: Standard Webhooks' default tolerance for the signed timestamp.
DEFAULT_TOLERANCE = 300
# Up to this much of a response body is read so the connection can go back to
# the pool; the content is never used. Larger or slower bodies are abandoned.
_MAX_DRAIN = 16 * 1024
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


# --- signatures ------------------------------------------------------------------
def _secret_bytes(secret: str) -> bytes:
    """The HMAC key: base64 after ``whsec_`` (Standard Webhooks), else the raw text."""
    if secret.startswith(SECRET_PREFIX):
        try:
            return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        except (binascii.Error, ValueError):
            pass  # not base64 after all: fall back like any other plain secret
    return secret.encode("utf-8")


def _as_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else body


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` value: ``v1,`` + base64 HMAC-SHA256 of ``id.timestamp.body``."""
    content = f"{msg_id}.{timestamp}.".encode() + _as_bytes(body)
    digest = hmac.new(_secret_bytes(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def verify(
    secret: str,
    msg_id: str,
    timestamp: int | str,
    body: bytes | str,
    signature_header: str,
    *,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """True if ``signature_header`` holds a valid ``v1`` signature of this message.

    The header may list several space-separated signatures (secret rotation);
    one match suffices. A timestamp further than ``tolerance`` seconds from
    ``now`` fails, which bounds replays.
    """
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - ts) > tolerance:
        return False
    expected = sign(secret, msg_id, ts, body).encode("ascii")
    for candidate in signature_header.split():
        version, _, _ = candidate.partition(",")
        if version == "v1" and hmac.compare_digest(candidate.encode("ascii", "replace"), expected):
            return True
    return False


# --- the SSRF guard --------------------------------------------------------------
def is_public_address(ip: IPAddress) -> bool:
    """True if ``ip`` is a globally routable unicast address (embedded IPv4 checked too)."""
    if isinstance(ip, ipaddress.IPv6Address):
        # Forms that carry an IPv4 address a gateway would deliver to.
        if ip.ipv4_mapped is not None:
            return is_public_address(ip.ipv4_mapped)
        if ip.sixtofour is not None and not is_public_address(ip.sixtofour):
            return False
        if ip.teredo is not None and not is_public_address(ip.teredo[1]):
            return False
        if ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
            if not is_public_address(embedded):
                return False
    # is_global alone is not enough: 224.0.0.0/4 and ::/8 forms count as global.
    return ip.is_global and not (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


class BlockedAddressError(Exception):
    """The endpoint's host resolved to an address the guard refuses."""

    def __init__(self, address: str) -> None:
        super().__init__(f"endpoint resolves to a non-public address {address}")
        self.address = address


def _resolve(host: str, port: int) -> list[str]:
    # getaddrinfo has no timeout of its own: the system resolver's (resolv.conf
    # timeout x attempts) bounds it.
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        # Raised as httpcore's error so httpx reports a ConnectError (retryable:
        # DNS failures are often temporary).
        raise httpcore.ConnectError(f"cannot resolve the endpoint host: {exc}") from exc
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


class _GuardedBackend(httpcore.NetworkBackend):
    """httpcore's sync backend, connecting only to addresses that pass the guard."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = httpcore.SyncBackend()
        self._allow_private = allow_private

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        addresses = _resolve(host, port)
        if not self._allow_private:
            # All or nothing: a name mixing public and private answers is not a
            # benign configuration, and trying only the public ones would let
            # an attacker probe which private ones answer.
            for address in addresses:
                if not is_public_address(ipaddress.ip_address(address)):
                    raise BlockedAddressError(address)
        deadline = None if timeout is None else time.monotonic() + timeout
        last_error: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else max(0.001, deadline - time.monotonic())
            try:
                # The checked address itself, never the name again: no second lookup.
                return self._inner.connect_tcp(
                    address, port, remaining, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
                if deadline is not None and time.monotonic() >= deadline:
                    break
        assert last_error is not None  # getaddrinfo never answers an empty list
        raise last_error

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not webhook endpoints")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class _GuardedTransport(httpx.HTTPTransport):
    """httpx's transport over a connection pool that uses :class:`_GuardedBackend`."""

    def __init__(
        self, *, allow_private: bool, limits: httpx.Limits, ssl_context: ssl.SSLContext | None
    ) -> None:
        super().__init__(limits=limits, trust_env=False, retries=0)
        # httpx 0.28 takes no network backend, so the pool it built is replaced
        # by an identical one with ours. If a future httpx stops using _pool,
        # the loopback tests in tests/channels/test_webhook.py fail loudly.
        self._pool = httpcore.ConnectionPool(
            # certifi's roots (or SSL_CERT_FILE's) unless the caller brings its own
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            retries=0,
            network_backend=_GuardedBackend(allow_private),
        )


# --- the provider ----------------------------------------------------------------
def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class WebhookProvider(Provider):
    """POSTs notifications to webhook endpoints; one pooled client, safe across threads."""

    name = "webhook"
    channel = Channel.WEBHOOK

    def __init__(
        self,
        *,
        timeout: float = 10.0,
        allow_private: bool = False,
        max_connections: int = 100,
        user_agent: str = "Clarion-Webhooks/0.1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.timeout = timeout
        self.allow_private = allow_private
        # Every connection kept alive: a worker's sending threads use them all
        # at once under load, and a new TLS handshake per request costs more
        # than an idle socket.
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        self._client = httpx.Client(
            transport=_GuardedTransport(
                allow_private=allow_private, limits=limits, ssl_context=ssl_context
            ),
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            trust_env=False,  # an env proxy would resolve the host past the guard
            headers={"User-Agent": user_agent},
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookProvider:
        return cls(
            timeout=settings.provider_timeout,
            allow_private=settings.webhook_allow_private,
            # As many connections as the worker process has calls in flight.
            max_connections=settings.send_concurrency,
        )

    @staticmethod
    def payload(message: OutgoingMessage) -> JSON:
        """The JSON body for ``message``."""
        data: JSON = dict(message.data)
        # Our fields last: template data cannot overwrite the notification id.
        data.update(
            {
                "notification_id": str(message.notification_id),
                "title": message.title,
                "message": message.body,
                "action_url": message.action_url,
                "action_label": message.action_label,
            }
        )
        return {"type": "notification", "timestamp": _now_iso(), "data": data}

    def send(self, message: OutgoingMessage) -> Receipt:
        try:
            url = httpx.URL(message.to)
        except httpx.InvalidURL as exc:
            raise BadAddressError("endpoint URL is invalid", provider=self.name) from exc
        if url.scheme not in ("http", "https") or not url.host:
            raise BadAddressError(
                "endpoint URL must be http(s) with a host",
                provider=self.name,
                response={"scheme": url.scheme},
            )
        too_large = limits.overrun(message)
        if too_large is not None:
            raise limits.too_large_error(self.name, too_large)
        # Stable across retries, so the receiver can deduplicate (Standard Webhooks).
        msg_id = message.idempotency_key or str(message.delivery_id)
        body = json.dumps(self.payload(message), separators=(",", ":"), ensure_ascii=False).encode()
        receipt = self.post(url, msg_id, body, message.secret)
        logger.debug(
            "webhook answered notification_id=%s delivery_id=%s status=%s",
            message.notification_id,
            message.delivery_id,
            receipt.response.get("status"),
        )
        return receipt

    def post(self, url: httpx.URL | str, msg_id: str, body: bytes, secret: str | None) -> Receipt:
        """POST ``body`` (JSON) to ``url``, signed with ``secret`` under ``webhook-id:
        msg_id``; the receipt for a 2xx, else the error the answer means (see the
        module docstring). Also Clarion's own status callbacks (``workers.callbacks``)."""
        url = httpx.URL(url) if isinstance(url, str) else url
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
        }
        if secret:
            headers["webhook-signature"] = sign(secret, msg_id, timestamp, body)
        # Without a secret the endpoint gets an unsigned request, which is what
        # an endpoint registered without one asked for.
        status: int | None = None
        retry_after: float | None = None
        try:
            with self._client.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
                retry_after = parse_retry_after(response.headers.get("retry-after"))
                self._drain(response)
        except BlockedAddressError as exc:
            raise BadAddressError(
                "endpoint address is not public",
                provider=self.name,
                response={"blocked_address": exc.address},
            ) from exc
        except httpx.TransportError as exc:  # timeouts included
            if status is None:
                # A timeout may come after the endpoint processed the request:
                # the retry carries the same webhook-id so it can deduplicate.
                raise RetryableError.from_exception(
                    "webhook request failed", exc, provider=self.name
                ) from exc
            # The answer arrived; only closing the connection failed. Raising
            # now would retry a request the endpoint has already answered.
        assert status is not None  # set before anything after the connect can fail
        return self._outcome(status, retry_after, msg_id)

    def _outcome(self, status: int, retry_after: float | None, msg_id: str) -> Receipt:
        """The receipt for a 2xx, else raise the error ``status`` means."""
        response: JSON = {"status": status}
        if 200 <= status < 300:
            return Receipt(
                provider=self.name, provider_message_id=msg_id, response=response, delivered=True
            )
        if retry_after is not None:
            response["retry_after"] = retry_after
        summary = f"webhook endpoint answered {status}"
        if 300 <= status < 400:
            raise PermanentError(
                summary + " (redirects are not followed)", provider=self.name, response=response
            )
        if status == 410:
            # Gone: the receiver says this endpoint will never take deliveries again.
            raise BadAddressError(
                summary, provider=self.name, disable_address=True, response=response
            )
        transient = transient_http_error(
            status, summary, provider=self.name, retry_after=retry_after, response=response
        )
        if transient is not None:
            raise transient
        raise PermanentError(summary, provider=self.name, response=response)

    def _drain(self, response: httpx.Response) -> None:
        """Read a small body so keep-alive can reuse the connection; never fail the send.

        The status is already known, so an error here must not undo a 2xx.
        The read is bounded in size and time: a slow or huge body is abandoned
        and its connection closed instead of reused.
        """
        deadline = time.monotonic() + self.timeout
        read = 0
        try:
            for chunk in response.iter_raw():
                read += len(chunk)
                if read > _MAX_DRAIN or time.monotonic() > deadline:
                    break
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self._client.close()
