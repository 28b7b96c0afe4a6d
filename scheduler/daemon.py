"""The scheduler daemon: claim due notifications, enqueue their deliveries.

One loop, several duties, each in a transaction of its own:

1. cancel pending notifications past ``expires_at`` (never sent);
2. queue the deliveries the delivery policy held whose time has come;
   claim due notifications in batches, urgent first then oldest
   (``FOR UPDATE SKIP LOCKED``: any number of schedulers may run), create one
   queued delivery per channel with a lease, commit, then enqueue the
   deliveries on their channel's queue: a lone delivery as a message of its
   own, several of one queue as messages of up to ``delivery_batch`` ids for
   the batch actor (:mod:`workers.actors`); the claim applies the delivery
   policy (``models.policy``);
3. queue again the deliveries whose lease ran out with no outcome;
4. relay due status callbacks (:mod:`models.callbacks`) to the broker, each
   with a lease: one the broker lost, or a worker died posting, is relayed
   again when its lease runs out;
5. every ``retention_interval``, purge rows past retention
   (:mod:`models.retention`) for at most ``retention_max_seconds``.

It sleeps until the next of: a ``NOTIFY clarion_notifications`` (sent by a
trigger on every INSERT into ``notifications``, whether from ``notify()`` or
plain SQL), the next scheduled notification's time, or the poll interval.
SIGTERM and SIGINT stop it after the batch in hand.

It never exits because something it depends on went away:

* a database error that :func:`clarion.core.db.is_transient_error` calls
  transient (a terminated session, a failover, a restart) in any step of the
  loop, the wait between batches included, is retried with a bounded backoff;
* a lost LISTEN connection is re-established, with backoff, for as long as the
  process lives; meanwhile the poll interval bounds the pick-up time;
* a failed enqueue stops the batch: the claimed deliveries are committed
  ``queued`` in PostgreSQL and their messages are held here and enqueued, in
  order, once the broker answers, before anything new is claimed. Should the
  process die first, the lease sweep enqueues them after
  ``CLARION_QUEUED_LEASE_SECONDS``.

Each outage is logged when it starts and when it ends (``scheduler.outage``).
"""

from __future__ import annotations

import collections
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
from dramatiq.message import generate_unique_id

from clarion.core.clock import utcnow
from clarion.core.db import is_transient_error
from clarion.core.errors import BrokerUnavailable
from models.callbacks import CallbackOutbox
from models.claims import Claims
from models.retention import Retention
from scheduler.metrics import SchedulerMetrics
from scheduler.outage import Outage, describe
from workers.enqueue import enqueue_many
from workers.queues import queue_for

log = logging.getLogger("clarion.scheduler")

NOTIFY_CHANNEL = "clarion_notifications"
#: Seconds a (re)connection of the LISTEN session may take before it counts as failed.
LISTEN_CONNECT_TIMEOUT = 5


@dataclasses.dataclass
class SchedulerStats:
    claimed: int = 0
    enqueued: int = 0
    reclaimed: int = 0
    cancelled: int = 0
    released: int = 0
    enqueue_failures: int = 0


@dataclasses.dataclass
class _Group:
    """Deliveries of one queue that will travel in one message."""

    queue_name: str
    message_id: str
    delivery_ids: list[str] = dataclasses.field(default_factory=list)


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
        metrics: SchedulerMetrics | None = None,
        callbacks: CallbackOutbox | None = None,
        callback_actor: dramatiq.Actor[[str], None] | None = None,
        callback_lease_seconds: float = 300.0,
        batch_actors: dict[str, dramatiq.Actor[[list[str]], None]] | None = None,
        delivery_batch: int = 1,
    ) -> None:
        #: Per queue, the actor taking several deliveries per message; without
        #: it (or with ``delivery_batch`` 1) every delivery is a message of its own.
        self.batch_actors = batch_actors or {}
        self.delivery_batch = delivery_batch if self.batch_actors else 1
        self.callbacks = callbacks
        self.callback_actor = callback_actor
        self.callback_lease_seconds = callback_lease_seconds
        self.claims = claims
        self.metrics = metrics if metrics is not None else SchedulerMetrics()
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
        # Deliveries of the claim in hand, grouped into messages to be; they
        # become unsent messages once it commits.
        self._pending: list[_Group] = []
        self._open: dict[str, _Group] = {}
        # Messages of committed deliveries the broker has not taken yet, oldest first.
        self._unsent: collections.deque[dramatiq.Message[Any]] = collections.deque()
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_retry_at = 0.0
        self.database = Outage("database")
        self.broker_outage = Outage("broker")
        self.listen_outage = Outage("LISTEN connection", first_delay=0.5)

    # --- one pass -------------------------------------------------------------------

    def _make_message(self, delivery_id: uuid.UUID, queue_name: str) -> str:
        """Place a delivery in a message to be; returns that message's id (the row keeps it)."""
        group = self._open.get(queue_name)
        if group is None or len(group.delivery_ids) >= self.delivery_batch:
            group = _Group(queue_name, generate_unique_id())
            self._open[queue_name] = group
            self._pending.append(group)
        group.delivery_ids.append(str(delivery_id))
        return group.message_id

    def _reset_pending(self) -> None:
        self._pending = []
        self._open = {}

    def _message(self, group: _Group) -> dramatiq.Message[Any]:
        if len(group.delivery_ids) == 1:
            actor: dramatiq.Actor[Any, Any] = self.actors[group.queue_name]
            args: tuple[Any, ...] = (group.delivery_ids[0],)
        else:
            actor = self.batch_actors[group.queue_name]
            args = (group.delivery_ids,)
        return dramatiq.Message(
            queue_name=actor.queue_name,
            actor_name=actor.actor_name,
            args=args,
            kwargs={},
            options={},
            message_id=group.message_id,
        )

    def _enqueue_pending(self) -> None:
        """Hand the committed claim's messages to the broker, held ones first."""
        self._unsent.extend(self._message(g) for g in self._pending)
        self._reset_pending()
        self._flush_unsent()

    def _flush_unsent(self) -> None:
        """Enqueue the held messages in order; stop at the first failure.

        One round trip per batch on Redis (:mod:`workers.enqueue`). No
        per-message retry: while the broker is down every message would
        spend the whole retry budget, and claiming would crawl for the length
        of the outage. One failure stops the batch; the loop backs off as a
        whole and tries again from the same message.
        """
        if not self._unsent:
            return
        try:
            enqueue_many(self.broker, list(self._unsent), self._taken)
        except Exception as exc:
            self.stats.enqueue_failures += 1
            self.metrics.enqueue_failures.inc()
            raise BrokerUnavailable(
                f"enqueue failed ({describe(exc)}); "
                f"{len(self._unsent)} messages of queued deliveries held"
            ) from exc

    def _taken(self, message: dramatiq.Message[Any]) -> None:
        """The broker took the oldest held message."""
        self._unsent.popleft()
        count = len(message.args[0]) if isinstance(message.args[0], list) else 1
        self.stats.enqueued += count
        self.metrics.enqueued_to(message.queue_name, count)

    @property
    def unsent(self) -> int:
        """Messages of committed deliveries still waiting for the broker."""
        return len(self._unsent)

    def run_once(self, *, sweep: bool = True) -> int:
        """One pass of every duty; returns the number of deliveries enqueued.

        Raises :class:`BrokerUnavailable` when the broker refuses a message
        (the rest of the pass waits for it) and SQLAlchemy's errors when the
        database does; the claims committed so far stay committed.
        """
        # What an earlier pass could not enqueue goes first: nothing new is
        # claimed while the broker cannot take it.
        self._flush_unsent()
        cancelled = self.claims.cancel_expired()
        if cancelled:
            self.stats.cancelled += cancelled
            self.metrics.expired.inc(cancelled)
            log.info("cancelled %d expired notifications", cancelled)
        total = 0
        # Deliveries the policy held (quiet hours, rate limit, collapse
        # follow-ups) whose time has come, before anything new.
        self._reset_pending()
        released = self.claims.release_held(
            batch_size=self.batch_size,
            lease_seconds=self.lease_seconds,
            make_message=self._make_message,
        )
        self._enqueue_pending()
        if released:
            self.stats.released += len(released)
            total += len(released)
            log.info("released %d held deliveries", len(released))
        while not self._stop.is_set():
            self._reset_pending()
            started = time.perf_counter()
            claims = self.claims.claim_due(
                batch_size=self.batch_size,
                lease_seconds=self.lease_seconds,
                queue_for=queue_for,
                make_message=self._make_message,
            )
            self.metrics.claim_seconds.observe(time.perf_counter() - started)
            priorities = {c.notification_id: c.priority for c in claims}
            claimed = len(priorities)
            for priority, count in collections.Counter(priorities.values()).items():
                self.metrics.claimed.labels(str(getattr(priority, "value", priority))).inc(count)
            if claimed:
                self.metrics.batch_size.observe(claimed)
            self._enqueue_pending()
            # Notifications taken, enqueued or not (the policy may hold or fold them all).
            claimed = claims.notifications
            self.stats.claimed += claimed
            total += len(claims)
            if claims:
                log.info("claimed %d notifications, enqueued %d deliveries", claimed, len(claims))
            # A short batch means nothing more is due right now.
            if claimed < self.batch_size:
                break
        if sweep:
            self._reset_pending()
            reclaimed = self.claims.reclaim_expired_leases(
                batch_size=self.batch_size,
                lease_seconds=self.lease_seconds,
                make_message=self._make_message,
            )
            self.metrics.reclaimed.inc(len(reclaimed))
            self._enqueue_pending()
            self.stats.reclaimed += len(reclaimed)
            total += len(reclaimed)
        self._relay_callbacks()
        return total

    def _relay_callbacks(self) -> None:
        """Hand due status callbacks to the broker. Leased before they are enqueued:
        a failed enqueue leaves them to the next pass after the lease, never lost."""
        if self.callbacks is None or self.callback_actor is None:
            return
        while True:
            ids = self.callbacks.claim_due(
                limit=self.batch_size, lease_seconds=self.callback_lease_seconds
            )
            for event_id in ids:
                try:
                    self.broker.enqueue(self.callback_actor.message(str(event_id)))
                except Exception as exc:
                    raise BrokerUnavailable(
                        f"enqueue of a status callback failed ({describe(exc)}); "
                        "it is relayed again when its lease runs out"
                    ) from exc
            if ids:
                log.info("relayed %d status callbacks", len(ids))
            if len(ids) < self.batch_size:
                return

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
            "LISTEN/NOTIFY"
            if self._listener is not None
            else ("polling until LISTEN connects" if self.listen_url else "polling only"),
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
                    budget = self._sleep_budget()
                except BrokerUnavailable as exc:
                    # The database answered, or the claim would not have
                    # committed; only the broker is down.
                    self.database.recovered()
                    self._wait(self.broker_outage.failed(str(exc)), wake_on_notify=False)
                    continue
                except Exception as exc:
                    if not is_transient_error(exc):
                        raise
                    self._reset_pending()  # that claim rolled back: its messages name no rows
                    self._wait(self.database.failed(describe(exc)), wake_on_notify=False)
                    continue
                self.database.recovered()
                self.broker_outage.recovered()
                self._purge_old_rows()
                self._wait(budget)
        finally:
            if self._listener is not None:
                self._listener.close()
            if self._unsent:
                log.warning(
                    "%d messages of queued deliveries were never enqueued; "
                    "the lease sweep of a scheduler will enqueue them",
                    len(self._unsent),
                )
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
        """Open the LISTEN session; on failure, schedule the next try with backoff."""
        if not self.listen_url:
            return
        try:
            conn = psycopg.connect(
                self.listen_url, autocommit=True, connect_timeout=LISTEN_CONNECT_TIMEOUT
            )
            try:
                conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
            except BaseException:
                conn.close()
                raise
        except psycopg.Error as exc:
            delay = self.listen_outage.failed(f"{describe(exc)}; polling meanwhile")
            self._listen_retry_at = time.monotonic() + delay
            self._listener = None
            return
        self._listener = conn
        self.listen_outage.recovered()

    def _drop_listener(self, exc: psycopg.Error) -> None:
        assert self._listener is not None
        try:
            self._listener.close()
        finally:
            self._listener = None
        # Reconnect at once the first time; backoff applies from the next failure.
        self._listen_retry_at = 0.0
        log.warning("LISTEN connection lost (%s); reconnecting", describe(exc))

    def _wait(self, seconds: float, *, wake_on_notify: bool = True) -> None:
        """Sleep up to ``seconds``, waking early on a NOTIFY or a stop request.

        A lost LISTEN session is reconnected here, whenever its backoff
        allows; a reconnection ends the wait, since rows inserted while nobody
        listened woke no one. ``wake_on_notify=False`` is a backoff: only a
        reconnection or a stop request cuts it short.
        """
        deadline = time.monotonic() + seconds
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            # Short slices so that a signal is honoured promptly.
            slice_ = min(remaining, 0.5)
            if self._listener is None:
                if not self.listen_url:
                    self._stop.wait(slice_)
                    continue
                if time.monotonic() >= self._listen_retry_at:
                    self._connect_listener()
                    if self._listener is not None:
                        # The server is back: a database backoff need not run out.
                        return
                    continue
                self._stop.wait(min(slice_, max(0.01, self._listen_retry_at - time.monotonic())))
                continue
            try:
                woke = False
                for _ in self._listener.notifies(timeout=slice_, stop_after=1):
                    woke = True
                if woke and wake_on_notify:
                    return
            except psycopg.Error as exc:
                self._drop_listener(exc)
