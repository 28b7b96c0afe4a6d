"""The shared HTTP status ladder, with each adapter's variant of it."""

from __future__ import annotations

import pytest

from channels.base import RetryableError, ThrottledError
from channels.http_status import (
    RetryAfterRule,
    on_5xx,
    on_5xx_or_408,
    on_503,
    transient_http_error,
)


def _kind(
    status: int,
    retry_after: float | None = None,
    *,
    throttled: bool = False,
    transient: bool = False,
    retry_after_throttles: RetryAfterRule = on_503,
    retry_408: bool = True,
) -> str:
    error = transient_http_error(
        status,
        "summary",
        provider="p",
        retry_after=retry_after,
        response={},
        throttled=throttled,
        transient=transient,
        retry_after_throttles=retry_after_throttles,
        retry_408=retry_408,
    )
    if error is None:
        return "adapter"
    return "throttled" if isinstance(error, ThrottledError) else "retryable"


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, None, "throttled"),
        (429, 5.0, "throttled"),
        (503, 5.0, "throttled"),
        (503, None, "retryable"),
        (500, 5.0, "retryable"),
        (502, None, "retryable"),
        (408, None, "retryable"),
        (408, 5.0, "retryable"),
        (400, None, "adapter"),
        (404, 5.0, "adapter"),
        (410, None, "adapter"),
        (301, None, "adapter"),
    ],
)
def test_default_ladder(status: int, retry_after: float | None, expected: str) -> None:
    assert _kind(status, retry_after) == expected


def test_retry_after_rules() -> None:
    assert _kind(500, 5.0, retry_after_throttles=on_5xx) == "throttled"
    assert _kind(408, 5.0, retry_after_throttles=on_5xx) == "retryable"
    assert _kind(408, 5.0, retry_after_throttles=on_5xx_or_408) == "throttled"
    assert _kind(502, 5.0, retry_after_throttles=on_503) == "retryable"


def test_provider_codes_win_over_the_status() -> None:
    assert _kind(400, None, throttled=True) == "throttled"
    assert _kind(400, None, transient=True) == "retryable"
    assert _kind(408, None, retry_408=False) == "adapter"
    assert _kind(408, None, retry_408=False, transient=True) == "retryable"


def test_error_carries_what_it_was_given() -> None:
    error = transient_http_error(
        429, "slow down", provider="p", retry_after=2.5, response={"status": 429}, request_id="r1"
    )
    assert isinstance(error, ThrottledError)
    assert isinstance(error, RetryableError)
    assert (str(error), error.provider, error.retry_after) == ("slow down", "p", 2.5)
    assert (error.response, error.request_id) == ({"status": 429}, "r1")
    # Retry-After is not copied into the response: that is the adapter's call.
    assert "retry_after" not in error.response
