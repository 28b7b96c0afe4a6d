"""What a scheduler records for Prometheus: claims, enqueues, lease sweeps, outages.

Counted as the loop goes (:class:`SchedulerMetrics`), plus a few gauges read
from the scheduler at each scrape (:class:`SchedulerState`): the messages
held while the broker is down, and which dependency is down now. The farm's
gauges (queue depth, the oldest due notification) are read from PostgreSQL
and the broker by :class:`clarion.metrics.FarmCollector`, which ``clarion
scheduler`` adds to the same registry.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from scheduler.daemon import Scheduler

#: Notifications per claim batch: 1 when they trickle in, CLARION_BATCH_SIZE
#: (500 by default) under a backlog.
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
CLAIM_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class SchedulerMetrics:
    """The families a :class:`~scheduler.daemon.Scheduler` records, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.claimed = Counter(
            "clarion_notifications_claimed_total",
            "Notifications claimed by this scheduler (each notification is claimed once, "
            "whether notify() or plain SQL created it), by priority.",
            ["priority"],
            registry=r,
        )
        self.expired = Counter(
            "clarion_notifications_expired_total",
            "Pending notifications cancelled unsent because expires_at passed.",
            registry=r,
        )
        self.batch_size = Histogram(
            "clarion_scheduler_claim_batch_size",
            "Notifications per claim batch (a batch that claimed nothing is not observed).",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.claim_seconds = Histogram(
            "clarion_scheduler_claim_duration_seconds",
            "Duration of one claim transaction (select, deliveries, commit), empty ones included.",
            buckets=CLAIM_SECONDS_BUCKETS,
            registry=r,
        )
        self.enqueued = Counter(
            "clarion_deliveries_enqueued_total",
            "Deliveries handed to the broker, by queue (lease sweeps included; a batch "
            "message counts each of its deliveries).",
            ["queue"],
            registry=r,
        )
        self.reclaimed = Counter(
            "clarion_deliveries_reclaimed_total",
            "Deliveries queued again by the lease sweep (a worker died mid-send, a message "
            "was lost).",
            registry=r,
        )
        self.enqueue_failures = Counter(
            "clarion_scheduler_enqueue_failures_total",
            "Enqueues the broker refused (each stops a batch until the broker answers).",
            registry=r,
        )
        self._queues: dict[str, Counter] = {}

    def enqueued_to(self, queue: str, count: int = 1) -> None:
        """``count`` deliveries handed to the broker on ``queue`` (one message or a batch)."""
        child = self._queues.get(queue)
        if child is None:
            child = self._queues[queue] = self.enqueued.labels(queue)
        child.inc(count)


class SchedulerState(Collector):
    """Gauges read from a running scheduler at each scrape."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        s = self.scheduler
        held = GaugeMetricFamily(
            "clarion_scheduler_held_messages",
            "Messages of committed deliveries held by the scheduler while the broker is down.",
            value=s.unsent,
        )
        down = GaugeMetricFamily(
            "clarion_scheduler_dependency_down",
            "1 while the scheduler is riding out an outage of this dependency.",
            labels=["dependency"],
        )
        for name, outage in (
            ("database", s.database),
            ("broker", s.broker_outage),
            ("listen", s.listen_outage),
        ):
            down.add_metric([name], 1.0 if outage.down else 0.0)
        yield held
        yield down
