"""The scheduler daemon: claim due notifications, enqueue their deliveries.

One loop, several duties, each in a transaction of its own:

1. cancel pending notifications past ``expires_at`` (never sent);
2. claim due notifications in batches, urgent first then oldest
   (``FOR UPDATE SKIP LOCKED``: any number of schedulers may run), create one
   queued delivery per channel with a lease, commit, then enqueue one message
   per delivery on its channel's queue;
3. queue again the deliveries whose lease ran out with no outcome;
4. every ``retention_interval``, purge rows past retention
   (:mod:`models.retention`) for at most ``retention_max_seconds``.

It sleeps until the next of: a ``NOTIFY clarion_notifications`` (sent by a
trigger on every INSERT into ``notifications``, whether from ``notify()`` or
plain SQL), the next scheduled notification's time, or the poll interval.
SIGTERM and SIGINT stop it after the batch in hand.
"""

from __future__ import annotations

import dataclasses
import logging
import signal
import threading
import time
import uuid
from types import FrameType
from typing import Any

import dramatiq
import psycopg
import sqlalchemy as sa
from tenacity import Retrying, stop_after_attempt, wait_exponential_jitter

from clarion.core.clock import utcnow
from models.claims import Claims
from models.retention import Retention
from workers.queues import queue_for

log = logging.getLogger("clarion.scheduler")

NOTIFY_CHANNEL = "clarion_notifications"


@dataclasses.dataclass
class SchedulerStats:
    claimed: int = 0
    enqueued: int = 0
    reclaimed: int = 0
    cancelled: int = 0
    enqueue_failures: int = 0


class Scheduler:
    def __init__(
        self,
        claims: Claims,
        broker: dramatiq.Broker,
        actors: dict[str, dramatiq.Actor[[str], None]],
        *,
        batch_size: int = 500,
        lease_seconds: float = 3600.0,
        poll_interval: float = 2.0,
        listen_url: str | None = None,
        retention: Retention | None = None,
        retention_interval: float = 300.0,
        retention_max_seconds: float = 1.0,
    ) -> None:
        self.claims = claims
        self.broker = broker
        self.actors = actors
        self.batch_size = batch_size
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.listen_url = listen_url
        self.retention = retention
        self.retention_interval = retention_interval
        self.retention_max_seconds = retention_max_seconds
        self._last_purge: float | None = None
        self.stats = SchedulerStats()
        self._stop = threading.Event()
        self._pending: list[dramatiq.Message[Any]] = []
        self._listener: psycopg.Connection[Any] | None = None
        self._enqueue_retry = Retrying(
            stop=stop_after_attempt(4),
            wait=wait_exponential_jitter(multiplier=0.05, max=1.0),
            reraise=True,
        )

    # --- one pass -------------------------------------------------------------------

    def _make_message(self, delivery_id: uuid.UUID, queue_name: str) -> str:
        message = self.actors[queue_name].message(str(delivery_id))
        self._pending.append(message)
        return message.message_id

    def _enqueue_pending(self) -> None:
        pending, self._pending = self._pending, []
        for message in pending:
            try:
                self._enqueue_retry(self.broker.enqueue, message)
                self.stats.enqueued += 1
            except Exception as exc:
                # The delivery keeps its lease: the sweep enqueues it again
                # when the lease runs out. Nothing is lost, only late.
                self.stats.enqueue_failures += 1
                log.error(
                    "enqueue of message %s failed (%s); the lease sweep will retry it",
                    message.message_id,
                    type(exc).__name__,
                )

    def run_once(self, *, sweep: bool = True) -> int:
        """One pass of every duty; returns the number of deliveries enqueued."""
        cancelled = self.claims.cancel_expired()
        if cancelled:
            self.stats.cancelled += cancelled
            log.info("cancelled %d expired notifications", cancelled)
        total = 0
        while not self._stop.is_set():
            self._pending = []
            claims = self.claims.claim_due(
                batch_size=self.batch_size,
                lease_seconds=self.lease_seconds,
                queue_for=queue_for,
                make_message=self._make_message,
            )
            self._enqueue_pending()
            claimed = len({c.notification_id for c in claims})
            self.stats.claimed += claimed
            total += len(claims)
            if claims:
                log.info("claimed %d notifications, enqueued %d deliveries", claimed, len(claims))
            # A short batch means nothing more is due right now.
            if claimed < self.batch_size:
                break
        if sweep:
            self._pending = []
            reclaimed = self.claims.reclaim_expired_leases(
                batch_size=self.batch_size,
                lease_seconds=self.lease_seconds,
                make_message=self._make_message,
            )
            self._enqueue_pending()
            self.stats.reclaimed += len(reclaimed)
            total += len(reclaimed)
        return total

    # --- the loop ---------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %d received; stopping after the current batch", signum)
            self.stop()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)

    def run(self) -> None:
        """Run until :meth:`stop` (or a signal, with the handlers installed)."""
        self._connect_listener()
        log.info(
            "scheduler started (batch %d, poll %.1f s, lease %.0f s, %s)",
            self.batch_size,
            self.poll_interval,
            self.lease_seconds,
            "LISTEN/NOTIFY" if self._listener is not None else "polling only",
        )
        last_sweep = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                sweep = now - last_sweep >= self.poll_interval
                try:
                    self.run_once(sweep=sweep)
                    if sweep:
                        last_sweep = now
                except (sa.exc.OperationalError, sa.exc.InterfaceError) as exc:
                    log.error("database unavailable (%s); retrying", type(exc).__name__)
                    self._stop.wait(min(self.poll_interval, 1.0))
                    continue
                self._purge_old_rows()
                self._wait(self._sleep_budget())
        finally:
            if self._listener is not None:
                self._listener.close()
            log.info(
                "scheduler stopped: %d enqueued, %d reclaimed, %d cancelled",
                self.stats.enqueued,
                self.stats.reclaimed,
                self.stats.cancelled,
            )

    def _purge_old_rows(self) -> None:
        """Housekeeping between batches: bounded in time, and never fatal to claiming."""
        if self.retention is None:
            return
        now = time.monotonic()
        if self._last_purge is not None and now - self._last_purge < self.retention_interval:
            return
        self._last_purge = now
        try:
            report = self.retention.purge(
                max_seconds=self.retention_max_seconds, should_stop=self._stop.is_set
            )
        except sa.exc.SQLAlchemyError as exc:
            # Old rows can wait for the next interval; due notifications cannot.
            log.warning(
                "retention purge failed (%s); next try in %.0f s",
                type(exc).__name__,
                self.retention_interval,
            )
            return
        if report.total:
            log.info(
                "retention: deleted %s%s",
                ", ".join(f"{n} {table}" for table, n in report.counts.items() if n),
                "" if report.complete else " (more left for the next run)",
            )

    def _sleep_budget(self) -> float:
        budget = self.poll_interval
        next_due = self.claims.next_due_at()
        if next_due is not None:
            budget = min(budget, max(0.0, (next_due - utcnow()).total_seconds()))
        return budget

    def _connect_listener(self) -> None:
        if not self.listen_url:
            return
        try:
            conn = psycopg.connect(self.listen_url, autocommit=True)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            self._listener = conn
        except psycopg.Error as exc:
            log.warning("LISTEN unavailable (%s); polling only", type(exc).__name__)
            self._listener = None

    def _wait(self, seconds: float) -> None:
        """Sleep up to ``seconds``, waking early on a NOTIFY or a stop request."""
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices so that a signal is honoured promptly.
            slice_ = min(remaining, 0.5)
            if self._listener is None:
                self._stop.wait(slice_)
                continue
            try:
                woke = False
                for _ in self._listener.notifies(timeout=slice_, stop_after=1):
                    woke = True
                if woke:
                    return
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); reconnecting", type(exc).__name__)
                try:
                    self._listener.close()
                finally:
                    self._listener = None
                self._connect_listener()
                return
