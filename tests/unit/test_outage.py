"""An outage does not burn attempts: the tracker and the policy's rule for it."""

from __future__ import annotations

import random

from channels.base import PermanentError, RetryableError, ThrottledError
from workers.outage import OutageTracker, provider_key
from workers.retry_policy import Action, RetryPolicy, decide

POLICY = RetryPolicy(min_backoff=5.0, max_backoff=3600.0, max_throttles=20)


def test_a_provider_is_down_after_threshold_failures_in_a_row() -> None:
    tracker = OutageTracker(threshold=3)
    assert [tracker.failed("ses") for _ in range(3)] == [False, False, True]
    assert tracker.is_down("ses")
    assert not tracker.is_down("twilio")


def test_one_success_clears_the_outage() -> None:
    tracker = OutageTracker(threshold=2)
    tracker.failed("ses")
    tracker.succeeded("ses")
    assert tracker.failed("ses") is False  # the count started again
    tracker.failed("ses")
    assert tracker.is_down("ses")
    tracker.succeeded("ses")
    assert not tracker.is_down("ses")


def test_endpoints_fail_apart_other_providers_as_one() -> None:
    assert provider_key("webhook", "https://a.example/hook") == "webhook:a.example"
    assert provider_key("webhook", "https://b.example:8443/x?y=1") == "webhook:b.example"
    assert provider_key("ses", "bidder@example.com") == "ses"
    assert provider_key("twilio", "+15005550006") == "twilio"


def test_a_retryable_error_while_down_waits_without_burning_an_attempt() -> None:
    rng = random.Random(7)
    error = RetryableError("503", provider="webhook")
    decision = decide(
        error, attempts=3, throttles=1, max_attempts=3, policy=POLICY, provider_down=True, rng=rng
    )
    assert decision.action is Action.RETRY
    assert decision.counts_attempt is False
    assert decision.reason == "provider down"
    assert POLICY.min_backoff / 2 <= decision.delay <= POLICY.min_backoff
    # The same error with the provider up exhausts the last attempt.
    up = decide(error, attempts=3, throttles=0, max_attempts=3, policy=POLICY, rng=rng)
    assert up.action is Action.EXHAUSTED and up.counts_attempt is True


def test_waits_while_down_are_bounded_like_throttles() -> None:
    error = RetryableError("503", provider="webhook")
    decision = decide(
        error,
        attempts=1,
        throttles=POLICY.max_throttles + 1,
        max_attempts=3,
        policy=POLICY,
        provider_down=True,
    )
    assert decision.action is Action.EXHAUSTED
    assert decision.counts_attempt is False
    assert "provider down" in decision.reason


def test_being_down_changes_nothing_for_permanent_errors_and_throttles() -> None:
    permanent = decide(
        PermanentError("rejected", provider="ses"),
        attempts=1,
        throttles=0,
        max_attempts=3,
        policy=POLICY,
        provider_down=True,
    )
    assert permanent.action is Action.FAIL
    throttle = decide(
        ThrottledError("429", provider="ses", retry_after=7.0),
        attempts=1,
        throttles=1,
        max_attempts=3,
        policy=POLICY,
        provider_down=True,
    )
    assert throttle.action is Action.RETRY and throttle.delay == 7.0


def test_a_threshold_of_zero_turns_the_rule_off() -> None:
    tracker = OutageTracker(threshold=0)
    assert [tracker.failed("ses") for _ in range(50)] == [False] * 50
    assert not tracker.is_down("ses")


def test_waits_while_down_are_capped_so_recovery_is_noticed_soon() -> None:
    policy = RetryPolicy(min_backoff=5.0, max_backoff=3600.0, max_outage_wait=60.0)
    error = RetryableError("503", provider="webhook")
    for waits in range(1, 21):
        decision = decide(
            error,
            attempts=1,
            throttles=waits,
            max_attempts=3,
            policy=policy,
            provider_down=True,
            rng=random.Random(waits),
        )
        assert decision.action is Action.RETRY
        assert decision.delay <= 60.0, (waits, decision.delay)
    # The cap is the outage rule's only: an ordinary retry still backs off in full.
    late = decide(
        error, attempts=10, throttles=0, max_attempts=30, policy=policy, rng=random.Random(1)
    )
    assert late.delay > 60.0
