"""Prometheus metrics of the top: notifications created, the farm's gauges, the endpoints.

Each daemon defines the families it records in its own layer
(:mod:`workers.metrics`, :mod:`scheduler.metrics`, :mod:`realtime.metrics`);
this module holds what belongs to none of them:

* :data:`NOTIFICATIONS_CREATED`, counted by :func:`clarion.notify` in the
  process that calls it (the web service, an application mounting
  :func:`asgi_app`);
* :class:`FarmCollector`: queue depth (ready, delayed, dead per queue), the
  age of the oldest due notification no scheduler has claimed, deliveries
  past their lease, live workers, read from PostgreSQL and the broker at
  each scrape with the queries of ``clarion status``;
* :class:`RecordsCollector` (``clarion web`` only): notifications by status,
  deliveries by channel/provider/status, provider calls by outcome, and
  dead-lettered deliveries, counted in PostgreSQL at each scrape, so that
  they survive the processes that did the work;
* the endpoints of ``clarion scheduler`` (:func:`start_scheduler_endpoint`)
  and ``clarion web`` (:func:`asgi_app`); ``clarion worker``'s is set up by
  :mod:`workers.exposition` alone, because it must run before anything in
  the process imports prometheus_client, this module included.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, ProcessCollector
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from clarion.core.settings import Settings
    from scheduler.daemon import Scheduler
    from workers.exposition import Endpoint, MetricsServer

log = logging.getLogger("clarion.metrics")

#: What this process's notify() calls record (served by :func:`asgi_app`).
REGISTRY = CollectorRegistry()
NOTIFICATIONS_CREATED = Counter(
    "clarion_notifications_created_total",
    "Notifications created by clarion.notify() in this process, by priority (an idempotent "
    "repeat is not counted; a row whose caller then rolled back is).",
    ["priority"],
    registry=REGISTRY,
)


def notification_created(priority: str) -> None:
    NOTIFICATIONS_CREATED.labels(priority).inc()


# --- the farm, read at each scrape -----------------------------------------------------


class FarmCollector(Collector):
    """Queue depth and the oldest due notification, from the database and the broker.

    Several schedulers report the same farm-wide values: aggregate with
    ``max``, not ``sum``. If the database or the broker does not answer, the
    scrape still succeeds: ``clarion_farm_up`` is 0 and the other farm
    gauges are left out (absent, not stale).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        broker_url: str,
        *,
        heartbeat_window: float = 60.0,
    ) -> None:
        self.sessions = sessions
        self.broker_url = broker_url
        self.heartbeat_window = heartbeat_window
        # Scrapes come in on threads of their own; one reading at a time.
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            try:
                metrics = self._read()
            except Exception as exc:
                # No traceback, no URL: a driver's message can carry a host, never
                # a password, but the type is what the operator needs.
                log.warning("farm metrics unavailable (%s)", type(exc).__name__)
                metrics = []
                up = 0.0
            else:
                up = 1.0
        yield GaugeMetricFamily(
            "clarion_farm_up",
            "1 if the last scrape could read the farm's gauges from the database and the broker.",
            value=up,
        )
        yield from metrics

    def _read(self) -> list[Metric]:
        from clarion.core.clock import utcnow
        from clarion.operators.deadletters import open_dead_letters
        from clarion.operators.status import expired_leases, oldest_due

        now = utcnow()
        with self.sessions() as s:
            oldest = oldest_due(s, now)
            expired = expired_leases(s, now)
        with open_dead_letters(self.broker_url) as dead_letters:
            queues = dead_letters.counts()
            workers = dead_letters.live_workers(self.heartbeat_window)
        depth = GaugeMetricFamily(
            "clarion_queue_messages",
            "Messages in the broker per queue and state: ready (waiting for a worker), delayed "
            "(retry backoff), dead (dead-letter queue).",
            labels=["queue", "state"],
        )
        for q in queues:
            depth.add_metric([q.queue, "ready"], q.ready)
            depth.add_metric([q.queue, "delayed"], q.delayed)
            depth.add_metric([q.queue, "dead"], q.dead)
        return [
            depth,
            GaugeMetricFamily(
                "clarion_oldest_due_seconds",
                "Age of the oldest due notification no scheduler has claimed (0: none waits).",
                value=0.0 if oldest is None else oldest[1],
            ),
            GaugeMetricFamily(
                "clarion_expired_leases",
                "Deliveries still queued or sending past their lease (the sweep queues them "
                "again).",
                value=expired,
            ),
            GaugeMetricFamily(
                "clarion_live_workers",
                "Workers seen by the broker lately (Redis: heartbeats in the last minute; "
                "RabbitMQ: the most consumers on a Clarion queue).",
                value=workers,
            ),
        ]


class RecordsCollector(Collector):
    """What the farm has done, as PostgreSQL records it, counted at each scrape.

    Farm-wide and durable: the figures outlive the processes that did the
    work (a worker's own counters start from zero at each restart and vanish
    with it), so a scrape of ``clarion web`` after the workers stopped still
    shows what they sent. Every row in the tables is counted (the retention
    job bounds them), in one transaction under a statement timeout so that a
    slow database cannot hold a scrape. The counts cost time in proportion to
    the rows (bench/web_metrics.py: about 1 s for a million notifications
    with four million attempts), so they are counted at most once
    per ``interval`` seconds: scrapes in between get the last counts. If
    counting fails, ``clarion_records_up`` is 0 and the families are left
    out.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        timeout_ms: int = 10_000,
        interval: float = 30.0,
    ) -> None:
        self.sessions = sessions
        self.timeout_ms = timeout_ms
        self.interval = interval
        self._lock = threading.Lock()
        self._last: tuple[float, list[Metric]] | None = None

    def collect(self) -> Iterator[Metric]:
        import time

        with self._lock:
            now = time.monotonic()
            if self._last is not None and now - self._last[0] < self.interval:
                metrics, up = self._last[1], 1.0
            else:
                try:
                    metrics = self._read()
                except Exception as exc:
                    log.warning("record metrics unavailable (%s)", type(exc).__name__)
                    metrics, up = [], 0.0
                    self._last = None
                else:
                    up = 1.0
                    self._last = (now, metrics)
        yield GaugeMetricFamily(
            "clarion_records_up",
            "1 if the last scrape could count the notifications, deliveries and attempts in "
            "PostgreSQL.",
            value=up,
        )
        yield from metrics

    def _read(self) -> list[Metric]:
        import sqlalchemy as sa

        from models.enums import DeliveryStatus, NotificationStatus
        from models.notifications import Delivery, DeliveryAttempt, Notification

        def label(value: object) -> str:
            return str(getattr(value, "value", value)) if value is not None else "none"

        n, d, a = Notification, Delivery, DeliveryAttempt
        with self.sessions() as s, s.begin():
            if s.get_bind().dialect.name == "postgresql":
                s.execute(sa.text(f"SET LOCAL statement_timeout = {int(self.timeout_ms)}"))
            by_status = s.execute(sa.select(n.status, sa.func.count()).group_by(n.status)).all()
            deliveries = s.execute(
                sa.select(d.channel, d.provider, d.status, sa.func.count()).group_by(
                    d.channel, d.provider, d.status
                )
            ).all()
            attempts = s.execute(
                sa.select(a.channel, a.provider, a.outcome, sa.func.count()).group_by(
                    a.channel, a.provider, a.outcome
                )
            ).all()
            dead = s.execute(
                sa.select(d.channel, sa.func.count())
                .where(d.dead_lettered_at.is_not(None), d.status == DeliveryStatus.FAILED)
                .group_by(d.channel)
            ).all()
        notifications = GaugeMetricFamily(
            "clarion_notifications",
            "Notifications in the database by status (every status is listed, 0 included).",
            labels=["status"],
        )
        counted = {label(status): int(count) for status, count in by_status}
        for st in NotificationStatus:
            notifications.add_metric([st.value], counted.get(st.value, 0))
        per_delivery = GaugeMetricFamily(
            "clarion_delivery_records",
            "Deliveries (one per notification and channel) in the database by channel, the "
            "provider that last took them (none: not attempted yet) and status.",
            labels=["channel", "provider", "status"],
        )
        for channel, provider, status, count in deliveries:
            per_delivery.add_metric([label(channel), label(provider), label(status)], count)
        per_attempt = GaugeMetricFamily(
            "clarion_attempt_records",
            "Provider calls recorded in delivery_attempts, receipts included, by channel, "
            "provider and outcome.",
            labels=["channel", "provider", "outcome"],
        )
        for channel, provider, outcome, count in attempts:
            per_attempt.add_metric([label(channel), label(provider), label(outcome)], count)
        dead_lettered = GaugeMetricFamily(
            "clarion_dead_lettered_deliveries",
            "Deliveries that ran out of attempts and were dead-lettered and not requeued since, "
            "by channel, as PostgreSQL records them (the broker's view: "
            'clarion_queue_messages{state="dead"}).',
            labels=["channel"],
        )
        for channel, count in dead:
            dead_lettered.add_metric([label(channel)], count)
        return [notifications, per_delivery, per_attempt, dead_lettered]


def _bind(endpoint: Endpoint, registry: Collector) -> MetricsServer:
    from workers.exposition import bind

    try:
        return bind(endpoint.host, endpoint.port, registry)
    except OSError as exc:  # socket.gaierror included: an unknown host
        raise endpoint.cannot_bind(exc) from None


# --- the daemons' endpoints ------------------------------------------------------------


def start_scheduler_endpoint(
    settings: Settings, scheduler: Scheduler, endpoint: Endpoint
) -> MetricsServer | None:
    """Serve the scheduler's families, its state and the farm's gauges at ``endpoint``
    from a thread of this process; None when the endpoint is off."""
    if not endpoint.enabled:
        return None
    from clarion.core.db import make_engine, session_factory
    from scheduler.metrics import SchedulerState
    from workers.exposition import serve_in_thread

    registry = scheduler.metrics.registry
    registry.register(SchedulerState(scheduler))
    # An engine of its own: a scrape never waits for a connection the loop holds.
    engine = make_engine(settings.effective_database_url, pool_size=1, max_overflow=1)
    registry.register(FarmCollector(session_factory(engine), settings.broker_url))
    ProcessCollector(registry=registry)
    server = _bind(endpoint, registry)
    serve_in_thread(server)
    log.info("scheduler metrics at %s", endpoint)
    return server


# --- clarion web ------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def web_registry(
    settings: Settings, *, engine: Engine | None = None, farm: bool = True
) -> CollectorRegistry:
    """What ``clarion web`` serves: the notifications it created, the farm's gauges and
    the records' counts (``farm=False`` leaves them out) read through ``engine`` (the web
    service's own; None: a small one of its own), its process."""
    from clarion.core.db import make_engine, session_factory

    registry = CollectorRegistry()
    registry.register(_Merged(REGISTRY))
    if farm:
        if engine is None:
            engine = make_engine(settings.effective_database_url, pool_size=1, max_overflow=1)
        sessions = session_factory(engine)
        registry.register(FarmCollector(sessions, settings.broker_url))
        registry.register(RecordsCollector(sessions))
    ProcessCollector(registry=registry)
    return registry


def asgi_app(settings: Settings, *, engine: Engine | None = None, farm: bool = True) -> ASGIApp:
    """An ASGI app answering GET with Prometheus text, for ``clarion web`` to mount at
    ``/metrics`` (e.g. Starlette's ``app.mount("/metrics", asgi_app(settings, engine=...))``)."""
    from prometheus_client import make_asgi_app

    app: ASGIApp = make_asgi_app(web_registry(settings, engine=engine, farm=farm))
    return app


class _Merged(Collector):
    """Another registry's families inside this one (a registry is also a collector,
    but registering it directly would describe it at registration time)."""

    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        yield from self.source.collect()
