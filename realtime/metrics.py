"""What a gateway records for Prometheus, served at ``GET /metrics`` on its own port.

Counted as events flow (:class:`GatewayMetrics`): events in by what became of
them, event frames out, the fan-out latency (from an event's arrival at the
gateway to its frame handed to each subscriber's socket), the publish lag
(from ``generated_at`` to arrival), connections cut off by reason. Read at
each scrape from the gateway's memory (:class:`GatewayState`): connections
open, subscriptions, refusals by kind, whether the Redis subscription is
receiving. Nothing
here touches a socket or the database: recording is an increment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from realtime.visibility import auction_key

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from realtime.fanin import FanIn
    from realtime.index import SubscriptionIndex
    from realtime.limits import Refusals

#: Seconds from arrival to the socket: a few ms for a small audience, up to
#: the slow-consumer cut-off (CLARION_GATEWAY_SEND_TIMEOUT, 5 s) for a stuck one.
FANOUT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Seconds from generated_at to arrival: the publisher's commit and PUBLISH, or
#: the relay (CLARION_EVENT_RELAY_AFTER, 5 s) when the publisher crashed.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
AUCTION_PREFIX = auction_key("")


class GatewayMetrics:
    """The families a gateway records, on ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "clarion_gateway_events_total",
            "Events that reached this gateway (from Redis, or replayed after a lost "
            "subscription), by result: dispatched, duplicate (seen already), expired, malformed.",
            ["result"],
            registry=r,
        )
        self.frames = Counter(
            "clarion_gateway_event_frames_total",
            "Event frames written to client sockets: first sends and redeliveries of unacked "
            "events.",
            ["send"],
            registry=r,
        )
        self.notifications = Counter(
            "clarion_gateway_notification_frames_total",
            "In-app notification frames written to client sockets.",
            registry=r,
        )
        self.fanout = Histogram(
            "clarion_gateway_fanout_seconds",
            "From an event's arrival at the gateway to its frame written to a subscriber's "
            "socket (first sends of live events): once per event for the frames written during "
            "its dispatch, once per frame for those that waited in a connection's queue.",
            buckets=FANOUT_BUCKETS,
            registry=r,
        )
        self.lag = Histogram(
            "clarion_gateway_event_lag_seconds",
            "From an event's generated_at (its row was written) to its arrival at this gateway.",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.cutoffs = Counter(
            "clarion_gateway_cutoffs_total",
            "Connections closed by the gateway, by reason (slow consumer, token expired, "
            "too many protocol errors).",
            ["reason"],
            registry=r,
        )
        self._first = self.frames.labels("first")
        self._again = self.frames.labels("redelivery")
        self._results = {
            name: self.events.labels(name)
            for name in ("dispatched", "duplicate", "expired", "malformed")
        }

    def event(self, result: str) -> None:
        self._results[result].inc()

    def arrived(self, generated_at: float | None, now: float) -> None:
        """An event arrived; ``generated_at`` is POSIX seconds (None: unknown)."""
        if generated_at is not None:
            self.lag.observe(max(0.0, now - generated_at))

    def frame_sent(self, arrived: float, attempt: int) -> None:
        """An event frame was written; ``arrived`` is the monotonic arrival (0: not live)."""
        if attempt > 1:
            self._again.inc()
            return
        self._first.inc()
        if arrived:
            self.fanout.observe(time.monotonic() - arrived)

    def frames_written(self, arrived: float, count: int) -> None:
        """``count`` first sends of one event written during its dispatch (no queue): the
        fan-out latency is observed once, at the last of them."""
        self._first.inc(count)
        if arrived:
            self.fanout.observe(time.monotonic() - arrived)

    def cut_off(self, reason: str) -> None:
        self.cutoffs.labels(reason).inc()


class GatewayState(Collector):
    """Gauges and totals read from the gateway's memory at each scrape."""

    def __init__(
        self, index: SubscriptionIndex, fanin: FanIn, refusals: Refusals | None = None
    ) -> None:
        self.index = index
        self.fanin = fanin
        self.refusals = refusals

    def collect(self) -> Iterator[Metric]:
        index = self.index
        connections = GaugeMetricFamily(
            "clarion_gateway_connections",
            "Open WebSocket connections, by whether they presented a token.",
            labels=["authenticated"],
        )
        authenticated = sum(1 for c in index.connections if c.viewer.authenticated)
        connections.add_metric(["true"], authenticated)
        connections.add_metric(["false"], len(index.connections) - authenticated)
        yield connections
        opened = CounterMetricFamily(
            "clarion_gateway_connections_opened",
            "WebSocket connections opened since the gateway started.",
            value=index.opened,
        )
        yield opened
        subscriptions = GaugeMetricFamily(
            "clarion_gateway_subscriptions",
            "Subscriptions of the open connections (one per connection and key), by kind: "
            "topic or auction.",
            labels=["kind"],
        )
        keys = GaugeMetricFamily(
            "clarion_gateway_subscription_keys",
            "Distinct keys (topics, auctions) with at least one subscriber.",
            labels=["kind"],
        )
        counts = {"topic": 0, "auction": 0}
        distinct = {"topic": 0, "auction": 0}
        for key, members in list(index.by_key.items()):
            kind = "auction" if key.startswith(AUCTION_PREFIX) else "topic"
            counts[kind] += len(members)
            distinct[kind] += 1
        for kind in ("topic", "auction"):
            subscriptions.add_metric([kind], counts[kind])
            keys.add_metric([kind], distinct[kind])
        yield subscriptions
        yield keys
        if self.refusals is not None:
            refused = CounterMetricFamily(
                "clarion_gateway_refusals",
                "Upgrades and subscriptions refused since the gateway started, by kind "
                "(as GET /healthz counts them).",
                labels=["kind"],
            )
            for kind, count in self.refusals.snapshot().items():
                refused.add_metric([kind], count)
            yield refused
        yield GaugeMetricFamily(
            "clarion_gateway_redis_receiving",
            "1 while the Redis subscription is up and nothing missed waits to be replayed "
            "(GET /healthz answers 200).",
            value=1.0 if self.fanin.receiving else 0.0,
        )
