"""How the scheduler rides out an outage of something it depends on.

The database, the broker and the LISTEN connection each get an ``Outage``: it
says how long to wait before the next try (a bounded exponential backoff), and
logs once when the outage starts and once when it ends, never once per try, so
that a long failover leaves two lines in the log instead of thousands.
"""

from __future__ import annotations

import logging
import time

log = logging.getLogger("clarion.scheduler")


class Outage:
    """The state of one dependency: up, or down since when and how many tries."""

    def __init__(self, what: str, *, first_delay: float = 0.1, max_delay: float = 5.0) -> None:
        self.what = what
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.failures = 0
        self._since = 0.0

    @property
    def down(self) -> bool:
        return self.failures > 0

    def failed(self, reason: str) -> float:
        """Record a failed try; returns the seconds to wait before the next one."""
        if self.failures == 0:
            self._since = time.monotonic()
            log.error("%s unavailable (%s); retrying with backoff", self.what, reason)
        self.failures += 1
        return min(self.max_delay, self.first_delay * 2.0 ** min(self.failures - 1, 30))

    def recovered(self) -> None:
        """Record a successful try (logs only if it ends an outage)."""
        if self.failures:
            log.warning(
                "%s available again after %.1f s (%d failed tries)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
            self.failures = 0


def describe(exc: BaseException) -> str:
    """A one-line reason for ``exc``: its type and the first line of the driver's
    message (libpq and redis messages name hosts and causes, never passwords)."""
    orig = getattr(exc, "orig", None) or exc
    first = str(orig).strip().splitlines()[0][:200] if str(orig).strip() else ""
    return f"{type(orig).__name__}: {first}" if first else type(orig).__name__
