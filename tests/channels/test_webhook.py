"""WebhookProvider: real httpx over real HTTP against WebhookReceiver."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import ipaddress
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from channels.base import (
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from channels.sandboxes.http import Fault
from channels.sandboxes.webhook import WebhookReceiver
from channels.webhook import WebhookProvider, is_public_address, sign, verify
from models.enums import Channel

TIMEOUT = 0.3
# A Standard Webhooks secret: "whsec_" + base64 of the key bytes.
KEY = b"clarion-test-key-0123456789abcdef"
SECRET = "whsec_" + base64.b64encode(KEY).decode()


@pytest.fixture(scope="module")
def _server() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(secret=SECRET) as hook:
        yield hook


@pytest.fixture
def receiver(_server: WebhookReceiver) -> WebhookReceiver:
    _server.reset()
    return _server


@pytest.fixture
def provider() -> Iterator[WebhookProvider]:
    # The receiver is on loopback, which the guard refuses unless told otherwise.
    hooks = WebhookProvider(timeout=TIMEOUT, allow_private=True)
    yield hooks
    hooks.close()


def message(url: str, **changes: Any) -> OutgoingMessage:
    msg = OutgoingMessage(
        notification_id=uuid.uuid4(),
        delivery_id=uuid.uuid4(),
        channel=Channel.WEBHOOK,
        to=url,
        title="Auction ending",
        body="Lot 7 closes in 5 minutes.",
        action_url="https://auctions.example.com/lots/7",
        action_label="Bid now",
        data={"auction_id": "A-1", "category": "auction"},
        secret=SECRET,
        idempotency_key=f"dlv_{uuid.uuid4().hex}",
    )
    return dataclasses.replace(msg, **changes)


def expected_signature(key: bytes, msg_id: str, timestamp: str, body: bytes) -> str:
    """Standard Webhooks v1, written from the spec without channels.webhook."""
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


# --- success and signature -------------------------------------------------------
def test_delivery_is_signed_per_the_spec(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    msg = message(receiver.url + "/hooks/clarion")
    before = int(time.time())
    receipt = provider.send(msg)

    assert receipt.provider == "webhook"
    assert receipt.delivered is True
    assert receipt.provider_message_id == msg.idempotency_key
    assert receipt.response == {"status": 200}
    [delivery] = receiver.deliveries
    headers = delivery.request.headers
    assert delivery.request.path == "/hooks/clarion"
    assert headers["content-type"] == "application/json"
    assert headers["webhook-id"] == msg.idempotency_key
    assert before <= int(headers["webhook-timestamp"]) <= int(time.time())
    assert headers["webhook-signature"] == expected_signature(
        KEY, headers["webhook-id"], headers["webhook-timestamp"], delivery.request.body
    )
    assert delivery.verified is True


def test_plain_secret_signs_with_its_utf8_bytes(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    provider.send(message(receiver.url, secret="plain-secret"))
    [delivery] = receiver.deliveries
    headers = delivery.request.headers
    assert headers["webhook-signature"] == expected_signature(
        b"plain-secret", headers["webhook-id"], headers["webhook-timestamp"], delivery.request.body
    )


def test_no_secret_sends_unsigned(receiver: WebhookReceiver, provider: WebhookProvider) -> None:
    provider.send(message(receiver.url, secret=None))
    assert "webhook-signature" not in receiver.deliveries[0].request.headers


def test_body_shape(receiver: WebhookReceiver, provider: WebhookProvider) -> None:
    msg = message(receiver.url, data={"auction_id": "A-1", "notification_id": "spoofed"})
    provider.send(msg)
    payload = receiver.deliveries[0].payload
    assert payload["type"] == "notification"
    assert datetime.fromisoformat(payload["timestamp"].replace("Z", "+00:00")).tzinfo is not None
    assert payload["data"] == {
        "auction_id": "A-1",
        "notification_id": str(msg.notification_id),  # data cannot overwrite it
        "title": "Auction ending",
        "message": "Lot 7 closes in 5 minutes.",
        "action_url": "https://auctions.example.com/lots/7",
        "action_label": "Bid now",
    }


def test_webhook_id_is_stable_across_retries(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    msg = message(receiver.url)
    receiver.fail(Fault(status=503))
    with pytest.raises(RetryableError):
        provider.send(msg)
    provider.send(msg)
    ids = [r.headers["webhook-id"] for r in receiver.requests]
    assert ids == [msg.idempotency_key, msg.idempotency_key]


def test_sign_and_verify_round_trip() -> None:
    body = b'{"type":"notification"}'
    now = int(time.time())
    signature = sign(SECRET, "msg_1", now, body)
    assert signature == expected_signature(KEY, "msg_1", str(now), body)
    assert verify(SECRET, "msg_1", now, body, signature)
    assert verify(SECRET, "msg_1", str(now), body, f"v1,bm90LWl0 {signature}")  # rotation
    assert not verify(SECRET, "msg_1", now, body + b" ", signature)
    assert not verify(SECRET, "msg_2", now, body, signature)
    assert not verify("whsec_" + base64.b64encode(b"other").decode(), "msg_1", now, body, signature)
    assert not verify(SECRET, "msg_1", now, body, signature, now=now + 301)  # replay window


def test_concurrent_sends_share_one_client(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            for _ in range(5):
                provider.send(message(receiver.url))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(receiver.deliveries) == 30
    assert all(d.verified for d in receiver.deliveries)


# --- answers mapped to errors ----------------------------------------------------
def test_redirect_is_not_followed(receiver: WebhookReceiver, provider: WebhookProvider) -> None:
    receiver.fail(Fault(status=302, headers={"Location": receiver.url + "/elsewhere"}))
    with pytest.raises(PermanentError) as caught:
        provider.send(message(receiver.url + "/hook"))
    assert type(caught.value) is PermanentError
    assert caught.value.response == {"status": 302}
    assert [r.path for r in receiver.requests] == ["/hook"]


def test_410_disables_the_endpoint(receiver: WebhookReceiver, provider: WebhookProvider) -> None:
    receiver.fail(Fault(status=410))
    with pytest.raises(BadAddressError) as caught:
        provider.send(message(receiver.url))
    assert caught.value.disable_address is True


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_throttled(
    receiver: WebhookReceiver, provider: WebhookProvider, status: int
) -> None:
    receiver.fail(Fault(status=status, retry_after=7))
    with pytest.raises(ThrottledError) as caught:
        provider.send(message(receiver.url))
    assert caught.value.retry_after == 7.0
    assert len(receiver.requests) == 1


def test_429_without_retry_after_is_throttled(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    receiver.fail(Fault(status=429))
    with pytest.raises(ThrottledError) as caught:
        provider.send(message(receiver.url))
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [408, 500, 502, 503, 504])
def test_408_and_5xx_are_retryable(
    receiver: WebhookReceiver, provider: WebhookProvider, status: int
) -> None:
    receiver.fail(Fault(status=status))
    with pytest.raises(RetryableError) as caught:
        provider.send(message(receiver.url))
    assert not isinstance(caught.value, ThrottledError)
    assert caught.value.response["status"] == status


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_other_4xx_are_permanent(
    receiver: WebhookReceiver, provider: WebhookProvider, status: int
) -> None:
    receiver.fail(Fault(status=status))
    with pytest.raises(PermanentError) as caught:
        provider.send(message(receiver.url))
    assert type(caught.value) is PermanentError


def test_dropped_connection_is_retryable(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    receiver.fail(Fault(drop=True))
    with pytest.raises(RetryableError):
        provider.send(message(receiver.url))


def test_timeout_is_retryable_and_bounded(provider: WebhookProvider) -> None:
    # A receiver of its own: the hung handler records its request after the test.
    with WebhookReceiver() as receiver:
        receiver.fail(Fault(hang=1.5))
        started = time.monotonic()
        with pytest.raises(RetryableError) as caught:
            provider.send(message(receiver.url))
        elapsed = time.monotonic() - started
    assert elapsed < 1.2  # the 0.3 s read timeout, not the 1.5 s hang
    assert caught.value.response == {"error": "ReadTimeout"}


def test_connection_refused_is_retryable(provider: WebhookProvider) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(RetryableError):
        provider.send(message(f"http://127.0.0.1:{port}/"))


# --- the SSRF guard --------------------------------------------------------------
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_private_address_refused_by_default(receiver: WebhookReceiver, host: str) -> None:
    guarded = WebhookProvider(timeout=TIMEOUT)
    try:
        with pytest.raises(BadAddressError) as caught:
            guarded.send(message(f"http://{host}:{receiver.port}/hook"))
    finally:
        guarded.close()
    assert caught.value.disable_address is False
    assert ipaddress.ip_address(caught.value.response["blocked_address"]).is_loopback
    assert receiver.requests == []


def test_private_address_allowed_when_configured(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    provider.send(message(f"http://localhost:{receiver.port}/hook"))
    assert len(receiver.deliveries) == 1


@pytest.mark.parametrize(
    "url", ["ftp://example.com/hook", "file:///etc/passwd", "gopher://example.com/", "not a url"]
)
def test_non_http_urls_are_refused(url: str) -> None:
    guarded = WebhookProvider(timeout=TIMEOUT, allow_private=True)
    try:
        with pytest.raises(BadAddressError):
            guarded.send(message(url))
    finally:
        guarded.close()


def _resolve_fake_host(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> list[str]:
    """Make ``hooks.example.test`` resolve to ``answers``; returns the lookups made."""
    real = socket.getaddrinfo
    lookups: list[str] = []

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "hooks.example.test":
            return real(host, port, *args, **kwargs)
        lookups.append(host)
        return [info for answer in answers for info in real(answer, port, *args, **kwargs)]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return lookups


def test_connects_to_the_checked_address_without_a_second_lookup(
    receiver: WebhookReceiver, provider: WebhookProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = _resolve_fake_host(monkeypatch, ["127.0.0.1"])
    provider.send(message(f"http://hooks.example.test:{receiver.port}/hook"))
    # One lookup: the address checked is the address connected to (no rebinding
    # window), while the Host header keeps the name.
    assert lookups == ["hooks.example.test"]
    assert receiver.deliveries[0].request.headers["host"] == f"hooks.example.test:{receiver.port}"


def test_any_private_answer_refuses_the_host(
    receiver: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolve_fake_host(monkeypatch, ["93.184.215.14", "127.0.0.1"])
    guarded = WebhookProvider(timeout=TIMEOUT)
    try:
        with pytest.raises(BadAddressError) as caught:
            guarded.send(message(f"http://hooks.example.test:{receiver.port}/hook"))
    finally:
        guarded.close()
    assert caught.value.response == {"blocked_address": "127.0.0.1"}
    assert receiver.requests == []


# --- TLS through the guard -------------------------------------------------------
def _tls_files(tmp_path: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a leaf certificate for ``name``: (ca, cert, key) PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Clarion test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_file, cert_file, key_file


@pytest.mark.parametrize(("cert_name", "ok"), [("hooks.example.test", True), ("other.test", False)])
def test_https_verifies_the_url_host_while_connecting_to_the_checked_ip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cert_name: str, ok: bool
) -> None:
    ca_file, cert_file, key_file = _tls_files(tmp_path, cert_name)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    client_context = ssl.create_default_context(cafile=str(ca_file))
    _resolve_fake_host(monkeypatch, ["127.0.0.1"])
    receiver = WebhookReceiver()
    # The sandbox speaks plain HTTP; wrapping its listening socket makes it HTTPS.
    receiver._server.socket = server_context.wrap_socket(receiver._server.socket, server_side=True)
    hooks = WebhookProvider(timeout=TIMEOUT, allow_private=True, ssl_context=client_context)
    with receiver:
        url = f"https://hooks.example.test:{receiver.port}/hook"
        try:
            if ok:
                assert hooks.send(message(url)).delivered
                assert len(receiver.deliveries) == 1
            else:
                # The certificate is checked against the URL's name, not the IP.
                with pytest.raises(RetryableError) as caught:
                    hooks.send(message(url))
                assert "Hostname mismatch" in str(caught.value.__cause__)
                assert receiver.requests == []
        finally:
            hooks.close()


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "0.0.0.0",  # noqa: S104 - an address under test, not a bind
        "224.0.0.1",
        "255.255.255.255",
        "192.0.2.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"]
)
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


def test_a_body_over_the_limit_is_refused_without_a_request(
    receiver: WebhookReceiver, provider: WebhookProvider
) -> None:
    # A plain INSERT bypasses notify()'s check: the adapter refuses it again.
    big = message(receiver.url + "/hooks/big", body="x" * (256 * 1024))
    with pytest.raises(PermanentError) as refused:
        provider.send(big)
    assert refused.value.response["error"] == "too_large"
    assert refused.value.response["limit"] == 256 * 1024
    assert receiver.requests == []
