"""Deliver deliveries: guard, send, decide, write back.

This is everything an actor does, free of Dramatiq so that it can be driven
directly by tests and the demo. The actor turns each returned
:class:`Outcome` into a Dramatiq action (done, a retry after a delay, a dead
letter). A message may carry several deliveries of one queue: they share one
guard (one transaction), their provider calls are in flight together
(:mod:`workers.sending`), and they share one write-back; each keeps its own
attempts, retry decision and outcome.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
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
from workers.sending import Sender

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
    #: For a retry or a dead letter of :meth:`Deliverer.deliver_many` with
    #: ``message_ids``: the id of the message to send for it (the row has it).
    message_id: str | None = None


class DeliveryStore(Protocol):
    """The database side of delivering: a :class:`~models.writeback.WriteBackStore`,
    or a :class:`~workers.batching.GroupCommitter` coalescing many threads' work."""

    def start_sending_many(
        self, delivery_ids: Sequence[uuid.UUID], *, lease_seconds: float
    ) -> dict[uuid.UUID, SendJob | None]: ...

    def write_back_many(self, items: Sequence[WriteBack]) -> None: ...

    def disable_addresses(self, address_ids: Iterable[uuid.UUID], reason: str) -> None: ...


@dataclasses.dataclass(slots=True)
class _Plan:
    """A taken delivery with something to send, and what its calls gave."""

    job: SendJob
    provider: Provider
    failover: bool
    targets: list[tuple[uuid.UUID | None, OutgoingMessage]]
    records: list[AttemptRecord] = dataclasses.field(default_factory=list)
    receipts: list[Receipt] = dataclasses.field(default_factory=list)
    errors: list[tuple[uuid.UUID | None, ChannelError]] = dataclasses.field(default_factory=list)
    calls: list[_Call] = dataclasses.field(default_factory=list)
    #: Calls still running.
    left: int = 0


@dataclasses.dataclass(slots=True)
class _Call:
    """One provider call of a plan (one per address)."""

    plan: _Plan
    address_id: uuid.UUID | None
    message: OutgoingMessage
    record: AttemptRecord | None = None
    receipt: Receipt | None = None
    error: ChannelError | None = None
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True, slots=True)
class _Final:
    """A delivery's write-back and outcome, reported once the write-back committed."""

    write: WriteBack
    outcome: Outcome
    provider: str
    level: int
    #: What the log line says of it: outcome and error type, never a body or address.
    text: str
    retry_reason: str | None = None

    def report(self, metrics: DeliveryMetrics) -> None:
        job = self.write.job
        log.log(
            self.level,
            "notification %s delivery %s %s",
            job.notification_id,
            job.delivery_id,
            self.text,
        )
        if self.retry_reason is not None:
            metrics.retry(job.channel.value, self.provider, self.retry_reason)
        metrics.finished(job.channel.value, self.provider, self.outcome.result.value)


def _fail_without_attempt(job: SendJob, error: str, provider: str) -> _Final:
    return _Final(
        WriteBack(job, (), DeliveryStatus.FAILED, error=error),
        Outcome(Result.FAILED, error=error),
        provider,
        logging.WARNING,
        f"failed: {error.split(':')[0]}",
    )


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
        sender: Sender | None = None,
    ) -> None:
        self.store = store
        #: Runs a batch's provider calls together; one at a time without it.
        self.sender = sender if sender is not None else Sender(1)
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
        """Deliver one delivery (:meth:`deliver_many` with one id)."""
        return self.deliver_many([delivery_id])[delivery_id]

    def deliver_many(
        self,
        delivery_ids: Sequence[uuid.UUID],
        *,
        message_ids: Callable[[], str] | None = None,
    ) -> dict[uuid.UUID, Outcome]:
        """Deliver several deliveries of one queue: one guard for all of them, their
        provider calls in flight together (:class:`~workers.sending.Sender`), their
        write-backs in as few transactions as the group commit makes of them. Each
        delivery keeps its own outcome, exactly as if it had come alone: its
        attempts, its retry decision, its dead letter.

        A delivery whose calls ended is written back at once when the store can
        take a write-back without waiting for it (the group commit's
        ``write_back_soon``), not after the batch's slowest call: what a killed
        worker had sent but not recorded, and sends again after its lease, stays
        what was in flight, not whole batches.

        With ``message_ids``, a delivery to retry or to dead-letter gets a fresh
        message id, recorded on its row with the outcome and returned in its
        :class:`Outcome`: the caller sends that message (a batch's deliveries
        go on as messages of their own).
        """
        ids = list(dict.fromkeys(delivery_ids))
        jobs = self._write(self.store.start_sending_many, ids, lease_seconds=self.lease_seconds)
        outcomes: dict[uuid.UUID, Outcome] = {}
        plans: list[_Plan] = []
        finals: list[_Final] = []
        for delivery_id in ids:
            job = jobs.get(delivery_id)
            if job is None:
                log.info("delivery %s is not sendable (already handled); dropped", delivery_id)
                self.metrics.drop()
                outcomes[delivery_id] = Outcome(Result.DROPPED)
                continue
            planned = self._plan(job)
            if isinstance(planned, _Final):
                finals.append(planned)
            else:
                plans.append(planned)
        early: list[tuple[_Final, Future[None]]] = []
        if plans:
            finals.extend(self._send(plans, early, message_ids))
        written: list[_Final] = []
        for final, future in early:
            if future.exception() is None:
                written.append(final)
            else:
                # Written again below with the deliverer's retry of transient
                # errors; idempotent, should the first write have committed.
                finals.append(final)
        if finals:
            self._write(self.store.write_back_many, [f.write for f in finals])
        for final in [*written, *finals]:
            final.report(self.metrics)
            outcomes[final.write.job.delivery_id] = final.outcome
        return outcomes

    def _plan(self, job: SendJob) -> _Plan | _Final:
        """What to send for ``job``, or its failure when there is nothing to send."""
        try:
            chain = self.providers.chain(job.channel)
        except ChannelError as exc:
            return _fail_without_attempt(job, str(exc), "none")
        targets = self._targets(job)
        if not targets:
            return _fail_without_attempt(
                job,
                f"no address: the user has no active {job.channel.value} address",
                chain[0].name,
            )
        if job.unsubscribed:
            return _fail_without_attempt(
                job, f"unsubscribed: the user unsubscribed from {job.category} email", chain[0].name
            )
        if job.suppressed:
            targets = [
                (aid, m)
                for aid, m in targets
                if normal_address(job.channel, m.to) not in job.suppressed
            ]
            if not targets:
                return _fail_without_attempt(
                    job,
                    f"suppressed: the {job.channel.value} address is suppressed (a bounce, a "
                    "complaint or a provider's report; `clarion suppression remove` lifts it)",
                    chain[0].name,
                )
        provider = self._choose(job, chain)
        failover = len(chain) > 1 and self.breaker is not None
        return _Plan(job, provider, failover, targets)

    def _send(
        self,
        plans: Sequence[_Plan],
        early: list[tuple[_Final, Future[None]]],
        message_ids: Callable[[], str] | None,
    ) -> list[_Final]:
        """Every provider call of ``plans``, in flight together.

        A plan whose calls all ended is decided at once; its write-back goes to
        ``early`` (handed to the store already) or is returned (to be written by
        the caller).
        """
        soon: Callable[[WriteBack], Future[None]] | None = getattr(
            self.store, "write_back_soon", None
        )
        lock = threading.Lock()
        later: list[_Final] = []
        disabled: dict[str, list[uuid.UUID]] = {}

        def run(call: _Call) -> None:
            self._call(call)
            finish(call)

        def finish(call: _Call) -> None:
            plan = call.plan
            with lock:
                plan.left -= 1
                if plan.left:
                    return
            for c in plan.calls:  # in the targets' order: the attempt history's
                assert c.record is not None
                plan.records.append(c.record)
                if c.receipt is not None:
                    plan.receipts.append(c.receipt)
                elif c.error is not None:
                    plan.errors.append((c.address_id, c.error))
                    dead = isinstance(c.error, BadAddressError) and c.error.disable_address
                    if dead and c.address_id is not None:
                        with lock:
                            disabled.setdefault(plan.provider.name, []).append(c.address_id)
            final = self._decide(plan, message_ids)
            if soon is not None and plan.provider.concurrent_sends:
                future = soon(final.write)
                # The sending thread waits for the commit before its next call,
                # so that what a killed worker sent without recording it is at
                # most one delivery per sending thread.
                future.exception()
                with lock:
                    early.append((final, future))
            else:
                with lock:
                    later.append(final)

        calls = []
        for plan in plans:
            plan.calls = [_Call(plan, aid, message) for aid, message in plan.targets]
            plan.left = len(plan.calls)
            calls.extend(plan.calls)
        inline: dict[str, list[_Call]] = {}
        for call in calls:
            if not call.plan.provider.concurrent_sends:
                inline.setdefault(call.plan.provider.name, []).append(call)
        for group in inline.values():
            # A local provider's calls in one go (one round trip), on this thread.
            self._call_many(group)
            for call in group:
                finish(call)
        self.sender.run([c for c in calls if c.plan.provider.concurrent_sends], run)
        for name, address_ids in disabled.items():
            self._write(
                self.store.disable_addresses,
                address_ids,
                f"{name} reported the address invalid or unregistered",
            )
        return later

    def _call(self, call: _Call) -> None:
        """One provider call; never raises (an error becomes the call's record)."""
        self._call_many([call])

    def _call_many(self, calls: Sequence[_Call]) -> None:
        """The calls of one provider in one :meth:`Provider.send_many` (for one call,
        the provider's ``send``); never raises: each call gets its record."""
        provider = calls[0].plan.provider
        started = utcnow()
        clock = time.perf_counter()
        sendable = []
        for call in calls:
            problem = address_problem(call.plan.job.channel, call.message.to)
            if problem is None:
                sendable.append(call)
            else:
                call.error = BadAddressError(problem, provider=provider.name)
        try:
            results: list[Receipt | ChannelError] = (
                provider.send_many([c.message for c in sendable]) if sendable else []
            )
        except Exception as exc:
            # An adapter let through something it does not map (a bug, a
            # new SDK error). Treated as retryable, so that it counts
            # against max_attempts and ends in the dead-letter queue
            # instead of leaving the delivery stuck in 'sending'. Only the
            # type is kept: SDK messages can quote addresses.
            for call in sendable:
                log.warning(
                    "notification %s delivery %s: unexpected %s from the %s adapter",
                    call.plan.job.notification_id,
                    call.plan.job.delivery_id,
                    type(exc).__name__,
                    provider.name,
                )
            wrapped = RetryableError(
                f"unexpected {type(exc).__name__} from the {provider.name} adapter",
                provider=provider.name,
            )
            results = [wrapped] * len(sendable)
        for call, result in zip(sendable, results, strict=True):
            if isinstance(result, Receipt):
                call.receipt = result
            else:
                call.error = result
        seconds = time.perf_counter() - clock
        for call in calls:
            if call.receipt is not None:
                call.record = AttemptRecord(
                    outcome=AttemptOutcome.DELIVERED
                    if call.receipt.delivered
                    else AttemptOutcome.SENT,
                    provider=call.receipt.provider,
                    started_at=started,
                    duration_ms=_elapsed_ms(clock),
                    response=call.receipt.response,
                    provider_message_id=call.receipt.provider_message_id,
                )
            else:
                assert call.error is not None
                call.record = _failed_record(call.error, provider.name, started, clock)
            call.seconds = seconds
            self.metrics.attempt(
                call.plan.job.channel.value,
                call.record.provider,
                call.record.outcome.value,
                seconds,
            )

    def _decide(self, plan: _Plan, message_ids: Callable[[], str] | None = None) -> _Final:
        job, provider, records = plan.job, plan.provider, tuple(plan.records)
        outage_key = provider_key(provider.name, plan.targets[0][1].to)
        if plan.failover and self.breaker is not None:
            if plan.receipts:
                self.breaker.succeeded(provider.name)
            elif any(exc.retryable for _, exc in plan.errors):
                self.breaker.failed(provider.name)
        if plan.receipts:
            self.outages.succeeded(outage_key)
            delivered = any(r.delivered for r in plan.receipts)
            result = Result.DELIVERED if delivered else Result.SENT
            return _Final(
                WriteBack(
                    job, records, DeliveryStatus.DELIVERED if delivered else DeliveryStatus.SENT
                ),
                Outcome(result),
                provider.name,
                logging.INFO,
                f"{result.value} via {provider.name}",
            )

        error = _worst(plan.errors)
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
        going_on = decision.action in (Action.RETRY, Action.EXHAUSTED)
        message_id = message_ids() if message_ids is not None and going_on else None
        if decision.action is Action.RETRY:
            retry_at = utcnow() + dt.timedelta(seconds=decision.delay)
            return _Final(
                WriteBack(
                    job,
                    records,
                    DeliveryStatus.QUEUED,
                    error=text,
                    counts_attempt=decision.counts_attempt,
                    retry_at=retry_at,
                    lease_seconds=self.queued_lease_seconds,
                    message_id=message_id,
                ),
                Outcome(
                    Result.RETRY, delay_ms=decision.delay_ms, error=text, message_id=message_id
                ),
                provider.name,
                logging.WARNING,
                f"{type(error).__name__} ({decision.reason}); retrying in {decision.delay:.1f} s",
                retry_reason=decision.reason,
            )
        exhausted = decision.action is Action.EXHAUSTED
        return _Final(
            WriteBack(
                job,
                records,
                DeliveryStatus.FAILED,
                error=text,
                counts_attempt=decision.counts_attempt,
                dead_letter=exhausted,
                message_id=message_id,
            ),
            Outcome(
                Result.EXHAUSTED if exhausted else Result.FAILED, error=text, message_id=message_id
            ),
            provider.name,
            logging.WARNING,
            f"failed: {type(error).__name__} ({decision.reason})",
        )

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
