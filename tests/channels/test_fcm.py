"""FCMProvider: real pyfcm + google-auth over real HTTP against FCMSandbox, offline."""

from __future__ import annotations

import dataclasses
import json
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from channels.base import (
    BadAddressError,
    OutgoingMessage,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from channels.fcm import FCMProvider
from channels.sandboxes.fcm import FCMSandbox, write_fake_service_account
from channels.sandboxes.http import Fault
from clarion.core.errors import SettingsError
from clarion.core.settings import Settings
from models.enums import Channel

PROJECT = "clarion-test"
TOKEN = "device-token-0123456789"
SEND = "messages:send"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[FCMSandbox]:
    server = FCMSandbox(project_id=PROJECT)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service_account(sandbox: FCMSandbox, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sandbox.write_service_account(tmp_path_factory.mktemp("fcm") / "service-account.json")


@pytest.fixture
def fcm(sandbox: FCMSandbox) -> Iterator[FCMSandbox]:
    sandbox.reset()
    yield sandbox
    sandbox.reset()


ProviderFactory = Callable[..., FCMProvider]


@pytest.fixture
def make_provider(fcm: FCMSandbox, service_account: Path) -> Iterator[ProviderFactory]:
    made: list[FCMProvider] = []

    def make(**overrides: Any) -> FCMProvider:
        options: dict[str, Any] = {
            "service_account_file": service_account,
            "endpoint": fcm.endpoint,
            "timeout": 0.5,
        }
        options.update(overrides)
        provider = FCMProvider(**options)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.close()


@pytest.fixture
def provider(make_provider: ProviderFactory, fcm: FCMSandbox) -> FCMProvider:
    """A provider that already holds an access token (its token request is forgotten)."""
    made = make_provider()
    made.send(push())
    fcm.reset()
    return made


def push(to: str = TOKEN, **fields: Any) -> OutgoingMessage:
    values: dict[str, Any] = {
        "notification_id": uuid.uuid4(),
        "delivery_id": uuid.uuid4(),
        "channel": Channel.PUSH,
        "to": to,
        "title": "You've been outbid",
        "body": "Someone bid 120 EUR on Lot 7",
        "data": {"auction_id": "42", "category": "bid"},
    }
    values.update(fields)
    return OutgoingMessage(**values)


def timed_send(provider: FCMProvider, message: OutgoingMessage) -> tuple[BaseException, float]:
    started = time.monotonic()
    with pytest.raises(Exception) as info:
        provider.send(message)
    return info.value, time.monotonic() - started


# --- success ------------------------------------------------------------------------
def test_send_returns_the_message_name(fcm: FCMSandbox, make_provider: ProviderFactory) -> None:
    provider = make_provider()
    message = push(action_url="https://auctions.example/lots/7")

    receipt = provider.send(message)
    provider.send(push())

    assert receipt.provider == "fcm"
    assert receipt.provider_message_id is not None
    assert receipt.provider_message_id.startswith(f"projects/{PROJECT}/messages/")
    assert receipt.response == {"name": receipt.provider_message_id}
    assert fcm.sent[0] == {
        "token": TOKEN,
        "notification": {"title": message.title, "body": message.body},
        "data": {
            "auction_id": "42",
            "category": "bid",
            "notification_id": str(message.notification_id),
            "action_url": "https://auctions.example/lots/7",
        },
    }
    # One token for both sends: google-auth refreshes only when it expires.
    assert [r.path for r in fcm.requests] == [
        "/token",
        f"/v1/projects/{PROJECT}/{SEND}",
        f"/v1/projects/{PROJECT}/{SEND}",
    ]
    assert fcm.requests[1].headers["authorization"].startswith("Bearer ya29.sandbox-")


def test_explicit_project_id_wins_over_the_service_account(
    fcm: FCMSandbox, make_provider: ProviderFactory
) -> None:
    provider = make_provider(project_id="another-project")

    error, _ = timed_send(provider, push())

    # The sandbox serves PROJECT only: the request went to the explicit project.
    assert type(error) is PermanentError
    assert error.response["error_status"] == "PERMISSION_DENIED"
    assert fcm.requests_to(SEND)[0].path == f"/v1/projects/another-project/{SEND}"


def test_from_settings(fcm: FCMSandbox, service_account: Path) -> None:
    settings = Settings(
        fcm_service_account_file=str(service_account),
        fcm_endpoint=fcm.endpoint,
        provider_timeout=1.0,
    )
    provider = FCMProvider.from_settings(settings)
    try:
        assert provider.project_id == PROJECT
        assert provider.send(push()).provider_message_id
    finally:
        provider.close()

    with pytest.raises(SettingsError, match="CLARION_FCM_SERVICE_ACCOUNT_FILE"):
        FCMProvider.from_settings(Settings())
    with pytest.raises(SettingsError, match="CLARION_FCM_SERVICE_ACCOUNT_FILE"):
        FCMProvider.from_settings(Settings(fcm_service_account_file="/nonexistent/sa.json"))


# --- throttling and server errors: one request, no sleeping ---------------------------
def test_429_is_throttled_with_retry_after(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.fail(Fault(status=429, retry_after=2, path_contains=SEND), times=3)

    error, elapsed = timed_send(provider, push())

    assert isinstance(error, ThrottledError)
    assert error.retry_after == 2.0
    assert error.response["error_code"] == "QUOTA_EXCEEDED"
    assert len(fcm.requests) == 1  # pyfcm's sleep-and-recurse on Retry-After is gone
    assert elapsed < 1.0


@pytest.mark.parametrize("status", [500, 502, 503])
def test_5xx_is_retryable_after_one_request(
    fcm: FCMSandbox, provider: FCMProvider, status: int
) -> None:
    fcm.fail(Fault(status=status, path_contains=SEND), times=3)

    error, elapsed = timed_send(provider, push())

    assert type(error) is RetryableError
    assert error.response["status"] == status
    assert len(fcm.requests) == 1  # pyfcm's default adapter would retry 502/503 ten times
    assert elapsed < 1.0


def test_503_with_retry_after_is_throttled(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.fail(Fault(status=503, retry_after=30, path_contains=SEND))

    error, elapsed = timed_send(provider, push())

    assert isinstance(error, ThrottledError)
    assert error.retry_after == 30.0
    assert len(fcm.requests) == 1
    assert elapsed < 1.0


# --- addresses ------------------------------------------------------------------------
def test_unregistered_token_is_disabled(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.unregister(TOKEN)

    error, _ = timed_send(provider, push())

    assert isinstance(error, BadAddressError)
    assert error.disable_address is True
    assert error.response["error_code"] == "UNREGISTERED"
    assert fcm.sent == []


def test_malformed_token_refused_by_fcm_is_disabled(fcm: FCMSandbox, provider: FCMProvider) -> None:
    # Passes our shape check (no whitespace) but not the sandbox's, as with FCM.
    error, _ = timed_send(provider, push("short"))

    assert isinstance(error, BadAddressError)
    assert error.disable_address is True
    assert len(fcm.requests) == 1


def test_sender_id_mismatch_is_disabled(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.fail(Fault(status=403, body={"errorCode": "SENDER_ID_MISMATCH"}, path_contains=SEND))

    error, _ = timed_send(provider, push())

    assert isinstance(error, BadAddressError)
    assert error.disable_address is True


@pytest.mark.parametrize("to", ["", "token with spaces", "x" * 4097])
def test_impossible_tokens_are_refused_without_a_request(
    fcm: FCMSandbox, provider: FCMProvider, to: str
) -> None:
    with pytest.raises(BadAddressError) as info:
        provider.send(push(to))

    assert info.value.disable_address is True
    assert fcm.requests == []


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=400, path_contains=SEND),  # INVALID_ARGUMENT about the payload
        Fault(status=403, body={"errorCode": None}, path_contains=SEND),  # PERMISSION_DENIED
        Fault(status=404, body="<html>Not Found</html>", path_contains=SEND),  # a wrong endpoint
        Fault(status=401, body={"errorCode": "THIRD_PARTY_AUTH_ERROR"}, path_contains=SEND),
    ],
    ids=["400-payload", "403-permission", "404-html", "401-apns"],
)
def test_other_client_errors_are_permanent_and_keep_the_token(
    fcm: FCMSandbox, provider: FCMProvider, fault: Fault
) -> None:
    fcm.fail(fault)

    error, _ = timed_send(provider, push())

    assert type(error) is PermanentError  # not a BadAddressError: the token stays enabled
    assert len(fcm.requests) == 1


def test_data_must_be_strings_and_not_reserved(fcm: FCMSandbox, provider: FCMProvider) -> None:
    with pytest.raises(PermanentError, match="strings"):
        provider.send(push(data={"amount": 120}))
    with pytest.raises(PermanentError, match="reserved"):
        provider.send(push(data={"google.c.a": "1"}))
    assert fcm.requests == []


# --- the network ----------------------------------------------------------------------
def test_dropped_connection_is_retryable(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.fail(Fault(drop=True, path_contains=SEND))

    error, elapsed = timed_send(provider, push())

    assert type(error) is RetryableError
    assert isinstance(error.__cause__, requests.ConnectionError)
    assert len(fcm.requests) == 1
    assert elapsed < 1.0


def test_timeouts_are_retryable(tmp_path: Path) -> None:
    # A sandbox of its own: the hung handlers wake after the test and would
    # otherwise record their requests in a later test's sandbox.
    slow = FCMSandbox(project_id=PROJECT)
    slow.start()
    key = slow.write_service_account(tmp_path / "sa.json")
    provider = FCMProvider(service_account_file=key, endpoint=slow.endpoint, timeout=0.5)
    try:
        slow.fail(Fault(hang=2, path_contains="/token"))  # the token endpoint hangs
        token_error, token_elapsed = timed_send(provider, push())
        slow.fail(Fault(hang=2, path_contains=SEND))  # then FCM itself
        send_error, send_elapsed = timed_send(provider, push())
    finally:
        provider.close()
        slow.stop()

    assert type(token_error) is RetryableError
    assert token_elapsed < 1.5
    assert type(send_error) is RetryableError
    assert isinstance(send_error.__cause__, requests.Timeout)
    assert send_elapsed < 1.5


def test_refused_connection_is_retryable(make_provider: ProviderFactory) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    provider = make_provider(endpoint=f"http://127.0.0.1:{port}/v1/projects")

    error, _ = timed_send(provider, push())

    assert type(error) is RetryableError


# --- OAuth2 -------------------------------------------------------------------------------
def test_revoked_access_token_is_renewed_once(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.revoke_tokens()

    receipt = provider.send(push())

    assert receipt.provider_message_id
    assert [r.path.rsplit("/", 1)[-1] for r in fcm.requests] == [SEND, "token", SEND]
    assert len(fcm.sent) == 1


def test_401_after_a_new_token_is_permanent(fcm: FCMSandbox, provider: FCMProvider) -> None:
    fcm.fail(Fault(status=401, path_contains=SEND), times=2)

    error, _ = timed_send(provider, push())

    assert type(error) is PermanentError
    assert error.response["error_status"] == "UNAUTHENTICATED"
    # The cached token was refused, one new token was fetched, the send replayed once.
    assert [r.path.rsplit("/", 1)[-1] for r in fcm.requests] == [SEND, "token", SEND]


def test_unknown_service_account_key_is_permanent(
    fcm: FCMSandbox, make_provider: ProviderFactory, tmp_path: Path
) -> None:
    stranger = write_fake_service_account(tmp_path / "stranger.json", fcm.token_uri, PROJECT)

    error, _ = timed_send(make_provider(service_account_file=stranger), push())

    assert type(error) is PermanentError
    assert "invalid_grant" in str(error)
    assert fcm.requests_to(SEND) == []


@pytest.mark.parametrize(
    ("fault", "error_class", "retry_after"),
    [
        (Fault(status=503, path_contains="/token"), RetryableError, None),
        (Fault(status=429, retry_after=5, path_contains="/token"), ThrottledError, 5.0),
    ],
)
def test_token_endpoint_trouble_is_one_request(
    fcm: FCMSandbox,
    make_provider: ProviderFactory,
    fault: Fault,
    error_class: type[RetryableError],
    retry_after: float | None,
) -> None:
    fcm.fail(fault, times=3)

    error, elapsed = timed_send(make_provider(), push())

    assert type(error) is error_class
    assert getattr(error, "retry_after", None) == retry_after
    # google-auth alone would try the token endpoint three times, sleeping between.
    assert [r.path for r in fcm.requests] == ["/token"]
    assert elapsed < 1.0


# --- the sandbox itself -----------------------------------------------------------------
def test_fake_service_account_is_a_real_one(tmp_path: Path) -> None:
    path = write_fake_service_account(tmp_path / "sa.json", "http://127.0.0.1:1/token", "p-1")

    info = json.loads(path.read_text())

    assert info["type"] == "service_account"
    assert info["token_uri"] == "http://127.0.0.1:1/token"
    assert info["project_id"] == "p-1"
    assert info["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
    assert path.stat().st_mode & 0o077 == 0


def test_sandbox_answers_fcm_errors(fcm: FCMSandbox) -> None:
    response = requests.post(
        f"{fcm.endpoint}/{PROJECT}/{SEND}",
        json={"message": {"token": TOKEN, "data": {"n": "1"}}},
        headers={"Authorization": "Bearer not-issued"},
        timeout=2,
    )
    assert response.status_code == 401
    assert response.json()["error"]["status"] == "UNAUTHENTICATED"

    fcm.fail(Fault(status=404, path_contains=SEND))
    unregistered = requests.post(f"{fcm.endpoint}/{PROJECT}/{SEND}", json={}, timeout=2)
    assert unregistered.json() == {
        "error": {
            "code": 404,
            "message": "Requested entity was not found.",
            "status": "NOT_FOUND",
            "details": [
                {
                    "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                    "errorCode": "UNREGISTERED",
                }
            ],
        }
    }


def test_reset_keeps_issued_tokens(fcm: FCMSandbox, provider: FCMProvider) -> None:
    # The provider fixture reset the sandbox after its first send: no new token needed.
    provider.send(dataclasses.replace(push(), title="again"))
    assert [r.path.rsplit("/", 1)[-1] for r in fcm.requests] == [SEND]


def test_a_payload_over_4_kb_is_refused_without_a_request(
    fcm: FCMSandbox, provider: FCMProvider
) -> None:
    fcm.reset()
    with pytest.raises(PermanentError) as refused:
        provider.send(push(body="x" * 5000))
    assert refused.value.response["error"] == "too_large"
    assert refused.value.response["limit"] == 4096
    assert fcm.requests_to("messages:send") == []
