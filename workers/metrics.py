"""What a worker records for Prometheus: deliveries, provider calls, retries, dead letters.

``clarion worker`` runs several processes (Dramatiq forks them). Each one
writes its samples to files of its own in a directory shared by the run
(prometheus-client's multiprocess mode: ``PROMETHEUS_MULTIPROC_DIR``, set by
``clarion worker`` before the fork, see :mod:`workers.exposition`), and one
exposition process sums them at ``/metrics``. Anywhere else (the embedded
demo, tests) the same families are ordinary in-process metrics on the
registry given.

Why not Dramatiq's own ``Prometheus`` middleware (read in dramatiq 2.2.1's
``dramatiq/middleware/prometheus.py``): its families are per actor and queue
only (messages, errors, retries, rejects, durations), so channels,
providers, outcomes and provider latency would need multiprocess metrics of
our own anyway, two mechanisms for one endpoint; its settings are
environment variables read at import (``dramatiq_prom_host``, default
``0.0.0.0``, ``dramatiq_prom_port``), and its sample directory is one fixed
path per machine (``$TMPDIR/dramatiq-prometheus``) that Dramatiq 2's CLI
never clears, so two workers on one host add up each other's samples and a
restarted worker starts from the last one's counters. What it does well is
kept: Dramatiq's hooks (:class:`WorkerMetrics` counts dead letters where
Dramatiq makes them, in ``after_nack``) and its fork mechanism for the
exposition process (``--fork-function``).

The hot path pays a dictionary lookup and an increment per sample: label
children are cached (:meth:`DeliveryMetrics.attempt`), never re-resolved.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.common import q_name
from dramatiq.middleware import Middleware
from prometheus_client import CollectorRegistry, Counter, Histogram

from workers.queues import channel_of

#: Provider calls take from a millisecond (in-app: a Redis PUBLISH) up to the
#: provider timeout (CLARION_PROVIDER_TIMEOUT, 10 s by default).
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

#: decision reasons of :func:`workers.retry_policy.decide` -> the ``reason`` label
RETRY_REASONS = {
    "retryable": "retryable",
    "throttled": "throttled",
    "provider down": "provider_down",
}


class DeliveryMetrics:
    """The families a :class:`~workers.delivery.Deliverer` records, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.deliveries = Counter(
            "clarion_deliveries_total",
            "Deliveries handled by a worker, by what came of this run: sent, delivered, "
            "failed (permanent, bad or no address), retry (waits in the delay queue), "
            "exhausted (attempts ran out: dead-lettered).",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self.requests = Counter(
            "clarion_provider_requests_total",
            "Provider calls (one per address), by outcome: sent, delivered, retryable, "
            "throttled, permanent, bad_address.",
            ["channel", "provider", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "clarion_provider_request_duration_seconds",
            "Duration of one provider call, whatever its outcome.",
            ["channel", "provider"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.retries = Counter(
            "clarion_delivery_retries_total",
            "Deliveries sent back to wait in the broker's delay queue, by reason: retryable "
            "(burns an attempt), throttled or provider_down (burn none).",
            ["channel", "provider", "reason"],
            registry=r,
        )
        self.dropped = Counter(
            "clarion_deliveries_dropped_total",
            "Messages dropped by the redelivery guard: their delivery was already handled, "
            "cancelled or expired (duplicate messages, late retries).",
            registry=r,
        )
        # (family, labels) -> child: labels() validates and locks on every call.
        self._children: dict[tuple[str, str, str, str], Any] = {}

    def _child(self, family: str, metric: Any, a: str, b: str, c: str = "") -> Any:
        key = (family, a, b, c)
        child = self._children.get(key)
        if child is None:
            child = metric.labels(a, b, c) if c else metric.labels(a, b)
            self._children[key] = child
        return child

    def attempt(self, channel: str, provider: str, outcome: str, seconds: float) -> None:
        """One provider call ended with ``outcome`` after ``seconds``."""
        self._child("requests", self.requests, channel, provider, outcome).inc()
        self._child("latency", self.latency, channel, provider).observe(seconds)

    def finished(self, channel: str, provider: str, outcome: str) -> None:
        """A delivery run ended: ``outcome`` is a :class:`~workers.delivery.Result` value."""
        self._child("deliveries", self.deliveries, channel, provider, outcome).inc()

    def retry(self, channel: str, provider: str, reason: str) -> None:
        """A delivery waits for another try; ``reason`` is the retry decision's."""
        label = RETRY_REASONS.get(reason, "retryable")
        self._child("retries", self.retries, channel, provider, label).inc()

    def drop(self) -> None:
        self.dropped.inc()


class WorkerMetrics(Middleware):
    """Dramatiq's view: dead letters and unexpected errors of the delivery actors.

    Added to the worker's broker only (:mod:`workers.entry`); the scheduler's
    and the operators' brokers never consume, so they carry none of it.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.dead_letters = Counter(
            "clarion_dead_letters_total",
            "Messages moved to their queue's dead-letter queue (attempts exhausted, or "
            "unexpected errors past the actor's retries).",
            ["channel", "queue"],
            registry=self.registry,
        )
        self.errors = Counter(
            "clarion_worker_errors_total",
            "Actor runs that raised an unexpected error (a bug, the database down before the "
            "send); Dramatiq retries them.",
            ["queue", "error"],
            registry=self.registry,
        )

    def after_nack(self, broker: dramatiq.Broker, message: MessageProxy) -> None:
        # A nack is how Dramatiq dead-letters: every failed message passes here once.
        queue = q_name(message.queue_name)
        try:
            channel = channel_of(queue).value
        except ValueError:
            channel = "unknown"
        self.dead_letters.labels(channel, queue).inc()

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if exception is None or isinstance(exception, dramatiq.Retry):
            return
        throws = broker.get_actor(message.actor_name).options.get("throws")
        if throws and isinstance(exception, throws):
            return  # intended (attempts exhausted): counted as a dead letter
        self.errors.labels(q_name(message.queue_name), type(exception).__name__).inc()
