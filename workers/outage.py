"""Which providers are down right now, as one worker process sees them.

A provider outage fails every delivery that reaches it, and with an attempt
budget of three, an outage of half a minute would fail every notification
sent in it: retries that could not have succeeded would burn the attempts
meant for faults of the message itself. So, after ``threshold`` retryable
failures of a provider in a row, across deliveries and with no success in
between, the provider counts as down, and the retry policy lets its next
retryable failures wait without burning an attempt (bounded like throttles:
``RetryPolicy.max_throttles``). The first success clears it.

A provider is its name, and for webhooks the endpoint's host as well: one
receiver being down says nothing about another. The state is per process
and in memory: each worker process learns an outage from its own sends,
after at most ``threshold`` of them.
"""

from __future__ import annotations

import threading
import urllib.parse

#: Retryable failures in a row, across deliveries, after which a provider counts as down.
DEFAULT_THRESHOLD = 5


def provider_key(provider: str, address: str) -> str:
    """What fails together: the provider, and for an endpoint URL its host too."""
    if "://" in address:
        host = urllib.parse.urlsplit(address).hostname or ""
        return f"{provider}:{host}"
    return provider


class OutageTracker:
    """Thread-safe count of each provider's retryable failures in a row."""

    def __init__(self, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self._failures: dict[str, int] = {}
        self._lock = threading.Lock()

    def succeeded(self, key: str) -> None:
        if key in self._failures:  # unlocked read: the common case costs no lock
            with self._lock:
                self._failures.pop(key, None)

    def failed(self, key: str) -> bool:
        """Record a retryable failure; True if the provider now counts as down."""
        if self.threshold <= 0:
            return False  # the rule is off: every retryable failure burns an attempt
        with self._lock:
            count = self._failures.get(key, 0) + 1
            self._failures[key] = count
        return count >= self.threshold

    def is_down(self, key: str) -> bool:
        return self.threshold > 0 and self._failures.get(key, 0) >= self.threshold
