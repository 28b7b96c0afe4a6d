"""Deliver one delivery: guard, send, decide, write back.

This is everything an actor does, free of Dramatiq so that it can be driven
directly by tests and the demo. The actor turns the returned
:class:`Outcome` into a Dramatiq action (done, ``Retry(delay)``, dead letter).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import time
import uuid
from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_delay,
    wait_exponential_jitter,
)

from channels.addresses import address_problem
from channels.base import (
    BadAddressError,
    ChannelError,
    OutgoingMessage,
    Provider,
    Receipt,
    RetryableError,
    ThrottledError,
)
from channels.registry import Providers
from channels.unsubscribe import UnsubscribeLinks
from clarion.core.clock import utcnow
from clarion.core.db import is_transient_error
from models.enums import AttemptOutcome, Channel, DeliveryStatus
from models.suppressions import normal_address
from models.writeback import AttemptRecord, SendJob, WriteBack
from workers.breaker import Breaker
from workers.metrics import DeliveryMetrics
from workers.outage import OutageTracker, provider_key
from workers.retry_policy import Action, RetryPolicy, decide

log = logging.getLogger("clarion.delivery")

T = TypeVar("T")

#: Channels that reach every active address of the user (one request each);
#: the others use the most recently added active address.
FAN_OUT = frozenset({Channel.PUSH, Channel.WEBHOOK})


class Result(enum.StrEnum):
    DROPPED = "dropped"  # not sendable (redelivery, cancelled, expired)
    SENT = "sent"
    DELIVERED = "delivered"
    FAILED = "failed"
    RETRY = "retry"
    EXHAUSTED = "exhausted"


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    result: Result
    delay_ms: int = 0
    error: str | None = None


class DeliveryStore(Protocol):
    """The database side of delivering: a :class:`~models.writeback.WriteBackStore`,
    or a :class:`~workers.batching.GroupCommitter` coalescing many threads' work."""

    def start_sending(self, delivery_id: uuid.UUID, *, lease_seconds: float) -> SendJob | None: ...

    def write_back(self, item: WriteBack) -> None: ...

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None: ...


class Deliverer:
    def __init__(
        self,
        store: DeliveryStore,
        providers: Providers,
        *,
        policy: RetryPolicy,
        lease_seconds: float,
        queued_lease_seconds: float = 3600.0,
        writeback_deadline: float = 60.0,
        outages: OutageTracker | None = None,
        metrics: DeliveryMetrics | None = None,
        breaker: Breaker | None = None,
        unsubscribe: UnsubscribeLinks | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics if metrics is not None else DeliveryMetrics()
        #: Per provider, shared by the worker processes; consulted only where a
        #: channel has providers to fail over to.
        self.breaker = breaker
        #: Adds RFC 8058 one-click unsubscribe headers to emails, when configured.
        self.unsubscribe = unsubscribe
        self.outages = outages or OutageTracker()
        self.providers = providers
        self.policy = policy
        self.lease_seconds = lease_seconds
        self.queued_lease_seconds = queued_lease_seconds
        # A message the provider accepted must be recorded, not sent again:
        # transient database errors during the write-back are retried for up
        # to this long (well inside the lease, so the sweeper never races it).
        self._writeback = Retrying(
            retry=retry_if_exception(is_transient_error),
            stop=stop_after_delay(min(writeback_deadline, lease_seconds / 2)),
            wait=wait_exponential_jitter(multiplier=0.05, max=2.0),
            reraise=True,
        )

    def _write(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # The first try outside tenacity: its bookkeeping costs more CPU than
        # the call itself on the hot path, and almost every call succeeds.
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            if not is_transient_error(exc):
                raise
            log.warning("database error (%s); retrying the write", type(exc).__name__)
        return self._writeback(fn, *args, **kwargs)

    def deliver(self, delivery_id: uuid.UUID) -> Outcome:
        job = self._write(self.store.start_sending, delivery_id, lease_seconds=self.lease_seconds)
        if job is None:
            log.info("delivery %s is not sendable (already handled); message dropped", delivery_id)
            self.metrics.drop()
            return Outcome(Result.DROPPED)
        try:
            chain = self.providers.chain(job.channel)
        except ChannelError as exc:
            return self._fail_without_attempt(job, str(exc), "none")
        targets = self._targets(job)
        if not targets:
            return self._fail_without_attempt(
                job,
                f"no address: the user has no active {job.channel.value} address",
                chain[0].name,
            )
        if job.unsubscribed:
            return self._fail_without_attempt(
                job, f"unsubscribed: the user unsubscribed from {job.category} email", chain[0].name
            )
        if job.suppressed:
            targets = [
                (aid, m)
                for aid, m in targets
                if normal_address(job.channel, m.to) not in job.suppressed
            ]
            if not targets:
                return self._fail_without_attempt(
                    job,
                    f"suppressed: the {job.channel.value} address is suppressed (a bounce, a "
                    "complaint or a provider's report; `clarion suppression remove` lifts it)",
                    chain[0].name,
                )
        provider = self._choose(job, chain)
        failover = len(chain) > 1 and self.breaker is not None

        records: list[AttemptRecord] = []
        receipts: list[Receipt] = []
        errors: list[tuple[uuid.UUID | None, ChannelError]] = []
        for address_id, message in targets:
            started = utcnow()
            clock = time.perf_counter()
            try:
                problem = address_problem(job.channel, message.to)
                if problem is not None:
                    raise BadAddressError(problem, provider=provider.name)
                receipt = provider.send(message)
            except ChannelError as exc:
                errors.append((address_id, exc))
                records.append(_failed_record(exc, provider.name, started, clock))
            except Exception as exc:
                # An adapter let through something it does not map (a bug, a
                # new SDK error). Treated as retryable, so that it counts
                # against max_attempts and ends in the dead-letter queue
                # instead of leaving the delivery stuck in 'sending'. Only the
                # type is kept: SDK messages can quote addresses.
                log.warning(
                    "notification %s delivery %s: unexpected %s from the %s adapter",
                    job.notification_id,
                    job.delivery_id,
                    type(exc).__name__,
                    provider.name,
                )
                wrapped = RetryableError(
                    f"unexpected {type(exc).__name__} from the {provider.name} adapter",
                    provider=provider.name,
                )
                errors.append((address_id, wrapped))
                records.append(_failed_record(wrapped, provider.name, started, clock))
            else:
                receipts.append(receipt)
                records.append(
                    AttemptRecord(
                        outcome=AttemptOutcome.DELIVERED
                        if receipt.delivered
                        else AttemptOutcome.SENT,
                        provider=receipt.provider,
                        started_at=started,
                        duration_ms=_elapsed_ms(clock),
                        response=receipt.response,
                        provider_message_id=receipt.provider_message_id,
                    )
                )
            last = records[-1]
            self.metrics.attempt(
                job.channel.value,
                last.provider,
                last.outcome.value,
                time.perf_counter() - clock,
            )

        dead = [
            aid
            for aid, exc in errors
            if isinstance(exc, BadAddressError) and exc.disable_address and aid
        ]
        if dead:
            self._write(
                self.store.disable_addresses,
                dead,
                f"{provider.name} reported the address invalid or unregistered",
            )

        outage_key = provider_key(provider.name, targets[0][1].to)
        if failover and self.breaker is not None:
            if receipts:
                self.breaker.succeeded(provider.name)
            elif any(exc.retryable for _, exc in errors):
                self.breaker.failed(provider.name)
        if receipts:
            self.outages.succeeded(outage_key)
            delivered = any(r.delivered for r in receipts)
            self._write(
                self.store.write_back,
                WriteBack(
                    job,
                    tuple(records),
                    DeliveryStatus.DELIVERED if delivered else DeliveryStatus.SENT,
                ),
            )
            log.info(
                "notification %s delivery %s %s via %s",
                job.notification_id,
                job.delivery_id,
                "delivered" if delivered else "sent",
                provider.name,
            )
            result = Result.DELIVERED if delivered else Result.SENT
            self.metrics.finished(job.channel.value, provider.name, result.value)
            return Outcome(result)

        error = _worst(errors)
        attempts = job.attempts + 1
        down = False
        if error.retryable and not isinstance(error, ThrottledError):
            down = self.outages.failed(outage_key)
        waits = isinstance(error, ThrottledError) or down
        decision = decide(
            error,
            attempts=attempts,
            throttles=job.throttles + (1 if waits else 0),
            max_attempts=job.max_attempts,
            policy=self.policy,
            provider_down=down,
        )
        text = f"{type(error).__name__}: {error}"
        if decision.action is Action.RETRY:
            retry_at = utcnow() + dt.timedelta(seconds=decision.delay)
            self._write(
                self.store.write_back,
                WriteBack(
                    job,
                    tuple(records),
                    DeliveryStatus.QUEUED,
                    error=text,
                    counts_attempt=decision.counts_attempt,
                    retry_at=retry_at,
                    lease_seconds=self.queued_lease_seconds,
                ),
            )
            log.warning(
                "notification %s delivery %s: %s (%s); retrying in %.1f s",
                job.notification_id,
                job.delivery_id,
                type(error).__name__,
                decision.reason,
                decision.delay,
            )
            self.metrics.retry(job.channel.value, provider.name, decision.reason)
            self.metrics.finished(job.channel.value, provider.name, Result.RETRY.value)
            return Outcome(Result.RETRY, delay_ms=decision.delay_ms, error=text)
        exhausted = decision.action is Action.EXHAUSTED
        self._write(
            self.store.write_back,
            WriteBack(
                job,
                tuple(records),
                DeliveryStatus.FAILED,
                error=text,
                counts_attempt=decision.counts_attempt,
                dead_letter=exhausted,
            ),
        )
        log.warning(
            "notification %s delivery %s failed: %s (%s)",
            job.notification_id,
            job.delivery_id,
            type(error).__name__,
            decision.reason,
        )
        result = Result.EXHAUSTED if exhausted else Result.FAILED
        self.metrics.finished(job.channel.value, provider.name, result.value)
        return Outcome(result, error=text)

    def _choose(self, job: SendJob, chain: list[Provider]) -> Provider:
        """The provider for this attempt: the one after the provider whose
        attempt failed (retryably) last, in the channel's order, skipping
        those whose circuit breaker is open; the first of that order if all are."""
        if len(chain) == 1:
            return chain[0]
        order = chain
        names = [p.name for p in chain]
        if job.last_provider in names:
            i = names.index(job.last_provider)
            order = chain[i + 1 :] + chain[: i + 1]
        if self.breaker is not None:
            for provider in order:
                if self.breaker.allow(provider.name):
                    return provider
        return order[0]

    def _fail_without_attempt(self, job: SendJob, error: str, provider: str) -> Outcome:
        self._write(self.store.write_back, WriteBack(job, (), DeliveryStatus.FAILED, error=error))
        self.metrics.finished(job.channel.value, provider, Result.FAILED.value)
        log.warning(
            "notification %s delivery %s failed: %s",
            job.notification_id,
            job.delivery_id,
            error.split(":")[0],
        )
        return Outcome(Result.FAILED, error=error)

    def _targets(self, job: SendJob) -> list[tuple[uuid.UUID | None, OutgoingMessage]]:
        def message(to: str, secret: str | None = None) -> OutgoingMessage:
            data = {
                "notification_id": str(job.notification_id),
                "category": job.category,
                "priority": job.priority,
            }
            if job.auction_id is not None:
                data["auction_id"] = str(job.auction_id)
            return OutgoingMessage(
                notification_id=job.notification_id,
                delivery_id=job.delivery_id,
                channel=job.channel,
                to=to,
                title=job.title,
                body=job.email_text if job.email_text is not None else job.message,
                html=job.email_html
                if job.email_html is not None
                else (job.message if job.html else None),
                action_url=job.action_url,
                action_label=job.action_label,
                data=data,
                secret=secret,
                idempotency_key=f"msg_{job.delivery_id.hex}",
                collapse_key=job.collapse_key,
                headers=headers,
            )

        headers: dict[str, str] = {}
        if job.channel is Channel.EMAIL and self.unsubscribe is not None:
            headers = self.unsubscribe.headers(job.user_id, job.category)

        if job.channel is Channel.IN_APP:
            return [(None, message(str(job.user_id)))]
        addresses = job.addresses if job.channel in FAN_OUT else job.addresses[:1]
        return [(a.address_id, message(a.address, a.secret)) for a in addresses]


def _elapsed_ms(clock: float) -> int:
    return int((time.perf_counter() - clock) * 1000)


def _failed_record(
    exc: ChannelError, provider: str, started: dt.datetime, clock: float
) -> AttemptRecord:
    if isinstance(exc, BadAddressError):
        outcome = AttemptOutcome.BAD_ADDRESS
    elif isinstance(exc, ThrottledError):
        outcome = AttemptOutcome.THROTTLED
    elif exc.retryable:
        outcome = AttemptOutcome.RETRYABLE
    else:
        outcome = AttemptOutcome.PERMANENT
    response = dict(exc.response)
    response.setdefault("error", type(exc).__name__)
    return AttemptRecord(
        outcome=outcome,
        provider=exc.provider or provider,
        started_at=started,
        duration_ms=_elapsed_ms(clock),
        response=response,
        request_id=exc.request_id,
        error=f"{type(exc).__name__}: {exc}",
    )


def _worst(errors: list[tuple[uuid.UUID | None, ChannelError]]) -> ChannelError:
    """With several addresses and no success: a retryable error wins (one may
    still get through), then a throttle, then the first permanent one."""
    for _, exc in errors:
        if exc.retryable and not isinstance(exc, ThrottledError):
            return exc
    for _, exc in errors:
        if isinstance(exc, ThrottledError):
            return exc
    return errors[0][1]
