"""The retry policy is a pure function: every branch, with a seeded RNG."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from channels.base import (
    BadAddressError,
    PermanentError,
    RetryableError,
    ThrottledError,
)
from workers.retry_policy import Action, RetryPolicy, backoff, decide

POLICY = RetryPolicy(min_backoff=5.0, max_backoff=60.0, max_retry_after=120.0, max_throttles=3)


def test_retryable_error_retries_with_backoff_until_attempts_run_out() -> None:
    error = RetryableError("503", provider="x")
    first = decide(error, attempts=1, throttles=0, max_attempts=3, policy=POLICY)
    assert first.action is Action.RETRY and first.counts_attempt
    assert 2.5 <= first.delay <= 5.0
    second = decide(error, attempts=2, throttles=0, max_attempts=3, policy=POLICY)
    assert second.action is Action.RETRY
    assert 2.5 <= second.delay <= 10.0
    last = decide(error, attempts=3, throttles=0, max_attempts=3, policy=POLICY)
    assert last.action is Action.EXHAUSTED
    assert "3 of 3" in last.reason


def test_throttle_waits_for_retry_after_without_burning_an_attempt() -> None:
    error = ThrottledError("429", provider="x", retry_after=7.0)
    decision = decide(error, attempts=3, throttles=1, max_attempts=3, policy=POLICY)
    assert decision.action is Action.RETRY
    assert decision.delay == 7.0
    assert decision.delay_ms == 7000
    assert decision.counts_attempt is False


def test_retry_after_is_clamped() -> None:
    error = ThrottledError("429", provider="x", retry_after=86_400)
    decision = decide(error, attempts=1, throttles=1, max_attempts=3, policy=POLICY)
    assert decision.delay == POLICY.max_retry_after


def test_throttles_are_bounded() -> None:
    error = ThrottledError("429", provider="x", retry_after=1)
    decision = decide(error, attempts=1, throttles=4, max_attempts=3, policy=POLICY)
    assert decision.action is Action.EXHAUSTED


def test_throttle_without_retry_after_backs_off() -> None:
    error = ThrottledError("429", provider="x")
    decision = decide(
        error, attempts=1, throttles=2, max_attempts=3, policy=POLICY, rng=random.Random(1)
    )
    assert decision.action is Action.RETRY
    assert 2.5 <= decision.delay <= 10.0


@pytest.mark.parametrize(
    "error",
    [PermanentError("rejected", provider="x"), BadAddressError("no such number", provider="x")],
)
def test_permanent_and_bad_address_fail_at_once(error: PermanentError) -> None:
    decision = decide(error, attempts=1, throttles=0, max_attempts=5, policy=POLICY)
    assert decision.action is Action.FAIL


@given(st.integers(min_value=1, max_value=200), st.integers(min_value=0, max_value=2**32))
def test_backoff_stays_within_bounds(attempts: int, seed: int) -> None:
    delay = backoff(attempts, POLICY, random.Random(seed))
    assert POLICY.min_backoff / 2 <= delay <= POLICY.max_backoff
