"""The one pure function that decides what happens after a provider error.

``decide(error, attempts=..., throttles=..., max_attempts=..., policy=...)``:

* retryable (timeouts, connection errors, 5xx): retry after an exponential
  backoff with full jitter, ``min_backoff * 2**(attempts-1)`` up to
  ``max_backoff``, until ``max_attempts`` attempts were made; then exhausted.
* throttled (429, with the provider's Retry-After): wait Retry-After, clamped
  to ``max_retry_after`` (the backoff when the provider gave none). A throttle
  does not burn an attempt, but at most ``max_throttles`` are honoured before
  the delivery is exhausted, so a provider that always answers 429 cannot
  keep a message forever.
* retryable while the provider is down (``provider_down``: it failed this way
  for several deliveries in a row, see ``workers.outage``): wait the backoff
  without burning an attempt, counted with the throttles and bounded by the
  same ``max_throttles``, so an outage does not fail the messages sent in it.
* permanent and bad-address errors: fail at once, no attempt burnt beyond the
  one that was made, no dead letter (retrying cannot help).
"""

from __future__ import annotations

import dataclasses
import enum
import random

from channels.base import BadAddressError, ChannelError, PermanentError, ThrottledError


class Action(enum.StrEnum):
    RETRY = "retry"
    FAIL = "fail"  # permanent: the delivery fails, the message is done
    EXHAUSTED = "exhausted"  # attempts ran out: the delivery fails, the message dead-letters


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    min_backoff: float = 5.0
    max_backoff: float = 3600.0
    max_retry_after: float = 900.0
    max_throttles: int = 20
    max_outage_wait: float = 60.0


@dataclasses.dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    #: Seconds to wait before the next attempt (RETRY only).
    delay: float = 0.0
    #: Whether the attempt that failed counts against max_attempts.
    counts_attempt: bool = True
    reason: str = ""

    @property
    def delay_ms(self) -> int:
        return int(self.delay * 1000)


def backoff(attempts: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff after ``attempts`` failed attempts (>= 1)."""
    ceiling = min(policy.max_backoff, policy.min_backoff * 2 ** max(0, attempts - 1))
    # Full jitter between min_backoff/2 and the ceiling: spreads a burst of
    # failures (a provider outage) without ever retrying immediately.
    low = min(policy.min_backoff / 2, ceiling)
    return (rng or random).uniform(low, ceiling)


def decide(
    error: ChannelError,
    *,
    attempts: int,
    throttles: int,
    max_attempts: int,
    policy: RetryPolicy,
    provider_down: bool = False,
    rng: random.Random | None = None,
) -> Decision:
    """What to do after ``error``.

    ``attempts`` counts the attempts made so far *including* the one that
    failed; ``throttles`` the waits that burnt no attempt so far (throttles and
    outage waits), including this one if it is such a wait.
    """
    if isinstance(error, BadAddressError):
        return Decision(Action.FAIL, reason="bad address")
    if isinstance(error, PermanentError):
        return Decision(Action.FAIL, reason="permanent error")
    if isinstance(error, ThrottledError):
        if throttles > policy.max_throttles:
            return Decision(
                Action.EXHAUSTED,
                counts_attempt=False,
                reason=f"throttled {throttles} times (limit {policy.max_throttles})",
            )
        if error.retry_after is not None:
            delay = min(max(error.retry_after, 0.0), policy.max_retry_after)
        else:
            delay = min(backoff(throttles, policy, rng), policy.max_retry_after)
        return Decision(Action.RETRY, delay=delay, counts_attempt=False, reason="throttled")
    if error.retryable and provider_down:
        if throttles > policy.max_throttles:
            return Decision(
                Action.EXHAUSTED,
                counts_attempt=False,
                reason=f"provider down through {throttles} waits (limit {policy.max_throttles})",
            )
        return Decision(
            Action.RETRY,
            delay=min(backoff(throttles, policy, rng), policy.max_outage_wait),
            counts_attempt=False,
            reason="provider down",
        )
    if error.retryable:
        if attempts >= max_attempts:
            return Decision(Action.EXHAUSTED, reason=f"{attempts} of {max_attempts} attempts made")
        return Decision(Action.RETRY, delay=backoff(attempts, policy, rng), reason="retryable")
    return Decision(Action.FAIL, reason="not retryable")
