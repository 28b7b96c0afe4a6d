"""A circuit breaker per provider, in Redis, shared by every worker process.

Closed: the provider is used. ``threshold`` retryable failures (timeouts,
5xx, throttling) within ``window`` seconds, counted across all workers, open
it: for ``cooldown`` seconds every worker skips the provider and fails over
to the channel's next one. Then it is half-open: the first worker to ask
gets to probe it with one delivery (the others keep skipping it); the probe's
success closes it, its failure opens it for another cool-down.

Redis keys (``clarion:breaker:<provider>:...``): ``failures`` (a sorted set
of failure times), ``open_until`` (Unix seconds), ``probe`` (held by the
prober, expiring after a cool-down in case it dies). When Redis does not
answer the breaker stays out of the way (every provider is allowed): it is
an optimisation of failover, never a reason not to send.
"""

from __future__ import annotations

import enum
import logging
import time
import uuid
from collections.abc import Callable

import redis

__all__ = ["Breaker", "State"]

log = logging.getLogger("clarion.breaker")

_PREFIX = "clarion:breaker:"


class State(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Breaker:
    def __init__(
        self,
        client: redis.Redis | None,
        *,
        threshold: int,
        window: float,
        cooldown: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self.threshold = threshold
        self.window = window
        self.cooldown = cooldown
        self._clock = clock
        self._redis_down = False

    @classmethod
    def from_url(cls, url: str, *, threshold: int, window: float, cooldown: float) -> Breaker:
        client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        return cls(client, threshold=threshold, window=window, cooldown=cooldown)

    @property
    def enabled(self) -> bool:
        return self._redis is not None and self.threshold > 0

    def _key(self, provider: str, what: str) -> str:
        return f"{_PREFIX}{provider}:{what}"

    def _guard(self, what: str, exc: redis.RedisError) -> None:
        if not self._redis_down:
            log.warning("circuit breaker: Redis unavailable (%s); %s", type(exc).__name__, what)
            self._redis_down = True

    def state(self, provider: str) -> State:
        """The provider's state now, without taking a probe."""
        if not self.enabled:
            return State.CLOSED
        assert self._redis is not None
        try:
            raw = self._redis.get(self._key(provider, "open_until"))
        except redis.RedisError as exc:
            self._guard("every provider allowed", exc)
            return State.CLOSED
        if raw is None:
            return State.CLOSED
        return State.OPEN if float(raw) > self._clock() else State.HALF_OPEN

    def allow(self, provider: str) -> bool:
        """May this worker use ``provider`` now? In half-open, True for one prober only."""
        state = self.state(provider)
        if state is State.CLOSED:
            return True
        if state is State.OPEN:
            return False
        assert self._redis is not None
        try:
            got = self._redis.set(
                self._key(provider, "probe"),
                uuid.uuid4().hex,
                nx=True,
                px=max(1, int(self.cooldown * 1000)),
            )
        except redis.RedisError as exc:
            self._guard("every provider allowed", exc)
            return True
        if got:
            log.info("circuit breaker %s half-open: probing it", provider)
        return bool(got)

    def succeeded(self, provider: str) -> None:
        """A call to ``provider`` succeeded: a half-open breaker closes."""
        if not self.enabled:
            return
        assert self._redis is not None
        try:
            if self._redis.exists(self._key(provider, "open_until")):
                self._redis.delete(
                    self._key(provider, "open_until"),
                    self._key(provider, "probe"),
                    self._key(provider, "failures"),
                )
                log.info("circuit breaker %s closed: the provider answered again", provider)
            self._redis_down = False
        except redis.RedisError as exc:
            self._guard("success not recorded", exc)

    def failed(self, provider: str) -> bool:
        """A retryable failure of ``provider``; True when this opened its breaker."""
        if not self.enabled:
            return False
        assert self._redis is not None
        now = self._clock()
        try:
            if self._redis.exists(self._key(provider, "open_until")):
                # A failed probe (or a call that started before the breaker
                # opened): open for another cool-down.
                self._open(provider, now)
                return True
            key = self._key(provider, "failures")
            pipe = self._redis.pipeline()
            pipe.zadd(key, {f"{now:.6f}:{uuid.uuid4().hex[:8]}": now})
            pipe.zremrangebyscore(key, "-inf", now - self.window)
            pipe.zcard(key)
            pipe.expire(key, max(1, int(self.window) + 1))
            count = int(pipe.execute()[2])
            self._redis_down = False
        except redis.RedisError as exc:
            self._guard("failure not counted", exc)
            return False
        if count >= self.threshold:
            self._open(provider, now)
            log.warning(
                "circuit breaker %s open: %d failures in %.0f s; skipped for %.0f s",
                provider,
                count,
                self.window,
                self.cooldown,
            )
            return True
        return False

    def _open(self, provider: str, now: float) -> None:
        assert self._redis is not None
        pipe = self._redis.pipeline()
        # Kept a day past the cool-down: half-open until a probe decides.
        pipe.set(
            self._key(provider, "open_until"),
            f"{now + self.cooldown:.6f}",
            ex=int(self.cooldown) + 86400,
        )
        pipe.delete(self._key(provider, "probe"), self._key(provider, "failures"))
        pipe.execute()

    def states(self, providers: list[str]) -> dict[str, State]:
        return {p: self.state(p) for p in providers}

    def close(self) -> None:
        if self._redis is not None:
            self._redis.close()
