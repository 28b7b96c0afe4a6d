"""Dead letters joined with the database: list, show, requeue, purge.

A dead letter is matched to its ``notification_deliveries`` row by the delivery
id it carries (every delivery actor takes exactly that argument); the row, not
the broker, says what happened last (the broker's payload is one attempt
behind). Writes go through :class:`~models.deadletters.DeadLetterRows`.

Requeue, per batch of dead letters (:data:`BATCH_SIZE`), in this order:

1. database (one transaction for the batch,
   :meth:`DeadLetterRows.requeue_dead_letters`): each delivery goes from failed
   back to queued with attempts reset, and records the message id of the copy
   about to be enqueued; that id is derived from the dead letter's
   (:func:`~clarion.operators.deadletters.requeue_message_id`);
2. broker (:meth:`DeadLetters.move_many`, one round trip for the batch): each
   copy is enqueued on the base queue and its dead letter removed, atomically
   per entry.

One transaction and one broker move per dead letter ran at about 44 per
second; batches of a few hundred make an outage's backlog minutes of work,
and ``--rate`` (:class:`Pacer`) holds them back for a provider that has just
recovered.

The database goes first so that a worker never receives the copy while the
row still says failed (it would drop it). If a run stops between 1 and 2, the
dead letter is still there and the row is queued with the derived id: the next
run recognises its own half-done requeue (``RESUMED``) and does step 2 only;
a batch interrupted anywhere is thus finished entry by entry.
A dead letter whose row is no longer dead-lettered (requeued and finished
since, purged, or a second dead letter of one delivery) is stale: it is
removed and counted as skipped. So each dead letter moves at most once and
each delivery is requeued at most once per death.

Listing has two views. By default ``dlq list`` reads PostgreSQL, the system of
record (:meth:`DeadLetterOps.iter_rows`): the deliveries with
``dead_lettered_at`` set, newest first through a partial index, so ``--limit``
reads no more rows than it shows on either broker. ``--source broker``
(:meth:`DeadLetterOps.iter_select`) reads the dead-letter queues themselves and
joins each entry with its row; on RabbitMQ that takes every entry off the queue
(AMQP has no peek and no index by time). The two can disagree (a message that
expired from the broker, a row that is no longer dead-lettered):
:func:`compare_counts` says where, and ``clarion status`` and ``dlq list`` show it.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import itertools
import math
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import sqlalchemy as sa
import sqlalchemy.exc
from sqlalchemy.orm import Session, sessionmaker

from clarion.core.clock import as_utc, utcnow
from clarion.core.errors import NotFoundError, ValidationError
from clarion.core.parse import as_enum
from clarion.operators.deadletters import (
    BrokerUnavailable,
    DeadLetter,
    DeadLetters,
    QueueCounts,
    requeue_copy,
)
from models.deadletters import DeadLetterRows, PurgeStep, RequeueItem, RequeueStep
from models.enums import Channel, DeliveryStatus
from models.notifications import Delivery, DeliveryAttempt, Notification
from workers.queues import actor_name, all_queues, channel_of

#: Dead letters per database transaction and per broker round trip. A few
#: hundred amortise the round trips; more only lengthen the locks held on the
#: notifications and the Lua script that blocks Redis while it runs.
BATCH_SIZE = 500

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_AGE = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str, *, field: str, now: dt.datetime | None = None) -> dt.datetime:
    """ISO 8601 (naive means UTC) or a relative age such as ``30m``, ``1h30m``, ``2d``."""
    value = text.strip()
    now = now or utcnow()
    if _AGE.fullmatch(value):
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _RELATIVE.findall(value))
        try:
            return now - dt.timedelta(seconds=seconds)
        except OverflowError:
            raise ValidationError(field, f"{text!r} reaches before the year 1") from None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(
            field,
            f"expected ISO 8601 (2024-05-01T12:00:00Z) or an age like 30m, 1h, 2d; got {text!r}",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)


@dataclasses.dataclass(frozen=True)
class Filters:
    """Which dead letters an operator command applies to."""

    channel: Channel | None = None
    queue: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    error: str | None = None
    limit: int | None = None

    @classmethod
    def parse(
        cls,
        *,
        channel: str | None = None,
        queue: str | None = None,
        since: str | None = None,
        until: str | None = None,
        error: str | None = None,
        limit: str | int | None = None,
    ) -> Filters:
        """Validate raw option values; a bad one raises ValidationError naming it."""
        chan = as_enum(Channel, channel, "--channel") if channel else None
        if queue and queue not in all_queues():
            raise ValidationError(
                "--queue", f"unknown queue {queue!r}; one of {', '.join(all_queues())}"
            )
        if chan is not None and queue and channel_of(queue) is not chan:
            raise ValidationError("--queue", f"queue {queue!r} is not a {chan.value} queue")
        lim: int | None = None
        if limit is not None and str(limit) != "":
            try:
                lim = int(limit)
            except ValueError:
                lim = 0
            if lim <= 0:
                raise ValidationError("--limit", f"must be a whole number above 0, got {limit!r}")
        start = parse_when(since, field="--since") if since else None
        end = parse_when(until, field="--until") if until else None
        if start and end and start > end:
            raise ValidationError("--since", "is later than --until")
        return cls(chan, queue or None, start, end, error or None, lim)

    def queues(self) -> list[str]:
        names = all_queues()
        if self.queue:
            names = [self.queue]
        if self.channel is not None:
            names = [q for q in names if channel_of(q) is self.channel]
        return names

    @property
    def empty(self) -> bool:
        return not any((self.channel, self.queue, self.since, self.until, self.error))


@dataclasses.dataclass(frozen=True)
class DeliveryInfo:
    """The database's side of a dead letter."""

    delivery_id: uuid.UUID
    notification_id: uuid.UUID
    user_id: uuid.UUID
    channel: str
    status: str
    attempts: int
    max_attempts: int
    last_error: str | None
    message_id: str | None
    dead_lettered_at: dt.datetime | None
    queue_name: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The database's view of a dead letter: the same keys as :meth:`Entry.to_json`."""
        queue = self.queue_name or self.channel
        return {
            "source": "database",
            "message_id": self.message_id,
            "queue": queue,
            "channel": self.channel,
            "actor": actor_name(queue),
            "delivery_id": str(self.delivery_id),
            "notification_id": str(self.notification_id),
            "user_id": str(self.user_id),
            "status": self.status,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "last_error": self.last_error,
            "died_at": _iso(self.dead_lettered_at),
        }


@dataclasses.dataclass(frozen=True)
class Entry:
    letter: DeadLetter
    delivery: DeliveryInfo | None

    @property
    def died_at(self) -> dt.datetime | None:
        if self.letter.died_at is not None:
            return self.letter.died_at
        return self.delivery.dead_lettered_at if self.delivery else None

    def to_json(self) -> dict[str, Any]:
        d = self.delivery
        return {
            "source": "broker",
            "message_id": self.letter.message_id,
            "queue": self.letter.queue,
            "channel": channel_of(self.letter.queue).value,
            "actor": self.letter.actor,
            "delivery_id": str(self.letter.delivery_id) if self.letter.delivery_id else None,
            "notification_id": str(d.notification_id) if d else None,
            "user_id": str(d.user_id) if d else None,
            "status": d.status if d else None,
            "attempts": d.attempts if d else None,
            "max_attempts": d.max_attempts if d else None,
            "last_error": d.last_error if d else None,
            "died_at": _iso(self.died_at),
        }


class Outcome(enum.StrEnum):
    REQUEUED = "requeued"
    PURGED = "purged"
    SKIPPED = "skipped"
    FAILED = "failed"
    WOULD_REQUEUE = "would_requeue"
    WOULD_PURGE = "would_purge"


@dataclasses.dataclass(frozen=True)
class ItemResult:
    entry: Entry
    outcome: Outcome
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "message_id": self.entry.letter.message_id,
            "delivery_id": str(self.entry.letter.delivery_id)
            if self.entry.letter.delivery_id
            else None,
            "queue": self.entry.letter.queue,
            "result": self.outcome.value,
            "reason": self.reason,
        }


@dataclasses.dataclass
class Counts:
    done: int = 0
    skipped: int = 0
    failed: int = 0


Progress = Callable[[ItemResult], None]


class DeadLetterOps:
    """The dead-letter commands over one broker and one database."""

    def __init__(
        self,
        dead_letters: DeadLetters,
        sessions: sessionmaker[Session],
        *,
        lease_seconds: float = 3600.0,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.dead_letters = dead_letters
        self.batch_size = batch_size
        self.sessions = sessions
        self.rows = DeadLetterRows(sessions)
        self.lease_seconds = lease_seconds

    # --- reading -------------------------------------------------------------------

    def iter_rows(self, filters: Filters) -> Iterator[DeliveryInfo]:
        """The dead-lettered deliveries matching ``filters`` as PostgreSQL
        records them, newest first, streamed a few hundred rows at a time.

        Every filter is part of the query and ``--limit`` its LIMIT: the
        partial index on ``dead_lettered_at`` hands over the newest rows
        first, so the database reads about as many rows as are shown. The
        broker is not touched.
        """
        with self.sessions() as s:
            for r in s.execute(self.rows_query(filters).execution_options(yield_per=BATCH_SIZE)):
                yield DeliveryInfo(
                    r.delivery_id,
                    r.notification_id,
                    r.user_id,
                    str(Channel(r.channel).value),
                    str(getattr(r.status, "value", r.status)),
                    int(r.attempts),
                    int(r.max_attempts or 3),
                    r.last_error,
                    r.message_id,
                    as_utc(r.dead_lettered_at),
                    r.queue_name,
                )

    @staticmethod
    def rows_query(filters: Filters) -> sa.Select[*tuple[Any, ...]]:
        """The query of :meth:`iter_rows`: filters, newest first, ``LIMIT``."""
        d, n = Delivery, Notification
        query = (
            sa.select(
                d.delivery_id,
                d.notification_id,
                n.user_id,
                d.channel,
                d.status,
                d.attempts,
                n.max_attempts,
                d.last_error,
                d.message_id,
                d.dead_lettered_at,
                d.queue_name,
            )
            .join(n, n.notification_id == d.notification_id)
            .where(d.dead_lettered_at.is_not(None), d.status == DeliveryStatus.FAILED)
            .order_by(d.dead_lettered_at.desc(), d.delivery_id.desc())
        )
        if filters.channel is not None:
            query = query.where(d.channel == filters.channel)
        if filters.queue:
            query = query.where(d.queue_name == filters.queue)
        if filters.since:
            query = query.where(d.dead_lettered_at >= filters.since)
        if filters.until:
            query = query.where(d.dead_lettered_at <= filters.until)
        if filters.error:
            query = query.where(
                sa.func.lower(d.last_error).contains(filters.error.lower(), autoescape=True)
            )
        if filters.limit is not None:
            query = query.limit(filters.limit)
        return query

    def compare(self, filters: Filters) -> Comparison:
        """Every dead letter in one of the two views and not in the other,
        matched by delivery id (``--channel`` and ``--queue`` narrow both).

        Reads both sides whole: on RabbitMQ every entry is taken off the
        queue (and handed back at the end), as ``--source broker`` does.
        """
        scope = Filters(channel=filters.channel, queue=filters.queue)
        rows = {r.delivery_id: r for r in self.iter_rows(scope)}
        matched: set[uuid.UUID] = set()
        broker_only: list[Entry] = []
        for entry in self.iter_select(scope):
            delivery_id = entry.letter.delivery_id
            if delivery_id is not None and delivery_id in rows and delivery_id not in matched:
                matched.add(delivery_id)
            else:  # no row dead-lettered for it, or a second dead letter of one delivery
                broker_only.append(entry)
        database_only = [r for key, r in rows.items() if key not in matched]
        return Comparison(len(matched), database_only, broker_only)

    def database_counts(self) -> dict[str | None, int]:
        """Dead-lettered deliveries per queue, as PostgreSQL records them."""
        return dead_lettered_counts(self.sessions)

    def select(self, filters: Filters) -> list[Entry]:
        """Dead letters matching ``filters``, newest first, joined with their rows."""
        return list(self.iter_select(filters))

    def iter_select(self, filters: Filters) -> Iterator[Entry]:
        """:meth:`select`, produced as it is read: the broker is read and the
        database joined a chunk at a time, and reading stops at ``--limit``
        (on Redis nothing beyond the chunks needed is fetched at all)."""
        letters = self.dead_letters.newest(
            filters.queues(), since=filters.since, until=filters.until
        )
        needle = filters.error.lower() if filters.error else None
        left = filters.limit
        while left is None or left > 0:
            chunk = list(itertools.islice(letters, _chunk_size(left, needle is not None)))
            if not chunk:
                return
            for entry in self._join(chunk):
                died = entry.died_at
                if filters.since and (died is None or died < filters.since):
                    continue
                if filters.until and (died is None or died > filters.until):
                    continue
                if needle is not None:
                    text = (entry.delivery.last_error or "") if entry.delivery else ""
                    if needle not in text.lower():
                        continue
                yield entry
                if left is not None:
                    left -= 1
                    if left == 0:
                        return

    def find(self, ids: Sequence[str], filters: Filters | None = None) -> list[Entry]:
        """The dead letters named by message id or delivery id (every id must match)."""
        entries = self.select(
            Filters(channel=filters.channel, queue=filters.queue) if filters else Filters()
        )
        chosen: list[Entry] = []
        missing = []
        for ident in ids:
            found = [
                e for e in entries if ident in (e.letter.message_id, str(e.letter.delivery_id))
            ]
            if not found:
                missing.append(ident)
            chosen.extend(e for e in found if e not in chosen)
        if missing:
            raise NotFoundError(f"no dead letter with message or delivery id {', '.join(missing)}")
        return chosen

    def history(
        self, delivery_id: uuid.UUID
    ) -> tuple[Notification | None, Delivery | None, list[DeliveryAttempt]]:
        with self.sessions() as s:
            delivery = s.get(Delivery, delivery_id)
            notification = s.get(Notification, delivery.notification_id) if delivery else None
            attempts = list(
                s.scalars(
                    sa.select(DeliveryAttempt)
                    .where(DeliveryAttempt.delivery_id == delivery_id)
                    .order_by(DeliveryAttempt.attempt_id)
                )
            )
        return notification, delivery, attempts

    def _join(self, letters: Iterable[DeadLetter]) -> list[Entry]:
        letters = list(letters)
        ids = {e.delivery_id for e in letters if e.delivery_id is not None}
        rows: dict[uuid.UUID, DeliveryInfo] = {}
        d, n = Delivery, Notification
        with self.sessions() as s:
            for chunk in _chunks(sorted(ids), 500):
                for r in s.execute(
                    sa.select(
                        d.delivery_id,
                        d.notification_id,
                        n.user_id,
                        d.channel,
                        d.status,
                        d.attempts,
                        n.max_attempts,
                        d.last_error,
                        d.message_id,
                        d.dead_lettered_at,
                    )
                    .join(n, n.notification_id == d.notification_id)
                    .where(d.delivery_id.in_(chunk))
                ):
                    rows[r.delivery_id] = DeliveryInfo(
                        r.delivery_id,
                        r.notification_id,
                        r.user_id,
                        str(Channel(r.channel).value),
                        str(getattr(r.status, "value", r.status)),
                        int(r.attempts),
                        int(r.max_attempts or 3),
                        r.last_error,
                        r.message_id,
                        as_utc(r.dead_lettered_at),
                    )
        return [
            Entry(e, rows.get(e.delivery_id) if e.delivery_id is not None else None)
            for e in letters
        ]

    # --- writing -------------------------------------------------------------------

    def requeue(
        self,
        entries: Sequence[Entry],
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
        rate: float | None = None,
    ) -> tuple[Counts, list[ItemResult]]:
        """Requeue ``entries`` a batch at a time (at most ``rate`` per second)."""
        if dry_run:
            return _each(entries, self._would_requeue, progress)
        return self._batched(entries, self._requeue_batch, progress, rate)

    def _batched(
        self,
        entries: Sequence[Entry],
        run: Callable[[Sequence[Entry]], list[ItemResult]],
        progress: Progress | None,
        rate: float | None,
    ) -> tuple[Counts, list[ItemResult]]:
        # In the broker's own order (oldest first): see DeadLetters.move_key.
        entries = sorted(entries, key=lambda e: self.dead_letters.move_key(e.letter))
        pacer = Pacer(rate) if rate else None
        size = pacer.batch_size(self.batch_size) if pacer else self.batch_size
        counts = Counts()
        results: list[ItemResult] = []
        for batch in _chunks(entries, size):
            if pacer:
                pacer.wait_for(len(batch))
            for result in run(batch):
                _count(counts, result)
                results.append(result)
                if progress:
                    progress(result)
        return counts, results

    def _would_requeue(self, entry: Entry) -> ItemResult:
        if entry.letter.delivery_id is None:
            return ItemResult(entry, Outcome.FAILED, "the message carries no delivery id")
        d = entry.delivery
        if d is None:
            return ItemResult(entry, Outcome.SKIPPED, "no delivery row")
        if d.status != "failed" or d.dead_lettered_at is None:
            return ItemResult(entry, Outcome.SKIPPED, f"delivery is {d.status}, not dead-lettered")
        return ItemResult(entry, Outcome.WOULD_REQUEUE)

    def _requeue_batch(self, batch: Sequence[Entry]) -> list[ItemResult]:
        """Step 1 for the whole batch in one transaction, then step 2 for the
        whole batch in one broker round trip (atomic per entry)."""
        results: dict[int, ItemResult] = {}
        items: list[tuple[int, Entry, RequeueItem, Any]] = []
        for i, entry in enumerate(batch):
            letter = entry.letter
            if letter.delivery_id is None:
                results[i] = ItemResult(entry, Outcome.FAILED, "the message carries no delivery id")
                continue
            copy = requeue_copy(letter)
            items.append(
                (i, entry, RequeueItem(letter.delivery_id, copy.message_id, letter.queue), copy)
            )
        try:
            steps = self.rows.requeue_dead_letters(
                [item for _, _, item, _ in items], lease_seconds=self.lease_seconds
            )
        except sqlalchemy.exc.OperationalError:
            raise  # unreachable: stop the run; the next one resumes
        except Exception as exc:
            if len(batch) > 1:
                # One bad row must not fail its neighbours: redo this batch one
                # by one, so that only the culprit is reported failed.
                return [r for entry in batch for r in self._requeue_batch([entry])]
            return [ItemResult(batch[0], Outcome.FAILED, f"{type(exc).__name__}: {exc}")]
        stale: list[tuple[int, Entry]] = []
        moves: list[tuple[int, Entry, RequeueStep, Any]] = []
        for (i, entry, _, copy), step in zip(items, steps, strict=True):
            if step is RequeueStep.MISSING:
                results[i] = ItemResult(
                    entry, Outcome.SKIPPED, "no delivery row; left in the dead-letter queue"
                )
            elif step is RequeueStep.STALE:
                stale.append((i, entry))
            else:
                moves.append((i, entry, step, copy))
        try:
            self.dead_letters.remove_many([entry.letter for _, entry in stale])
            for i, entry in stale:
                results[i] = ItemResult(
                    entry, Outcome.SKIPPED, "delivery no longer dead-lettered; stale entry removed"
                )
            moved = self.dead_letters.move_many([(e.letter, copy) for _, e, _, copy in moves])
        except BrokerUnavailable:
            raise
        except Exception as exc:
            reason = f"{type(exc).__name__}: {exc}"
            for i, entry in [*stale, *((i, e) for i, e, _, _ in moves)]:
                results.setdefault(i, ItemResult(entry, Outcome.FAILED, reason))
            return [results[i] for i in range(len(batch))]
        for (i, entry, step, _), ok in zip(moves, moved, strict=True):
            if not ok:
                results[i] = ItemResult(
                    entry, Outcome.SKIPPED, "entry vanished (moved by another run)"
                )
            else:
                reason = "finished an interrupted requeue" if step is RequeueStep.RESUMED else ""
                results[i] = ItemResult(entry, Outcome.REQUEUED, reason)
        return [results[i] for i in range(len(batch))]

    def purge(
        self,
        entries: Sequence[Entry],
        *,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> tuple[Counts, list[ItemResult]]:
        """Purge ``entries`` a batch at a time."""
        if dry_run:
            return _each(entries, lambda e: ItemResult(e, Outcome.WOULD_PURGE), progress)
        return self._batched(entries, self._purge_batch, progress, None)

    def _purge_batch(self, batch: Sequence[Entry]) -> list[ItemResult]:
        """The rows of the batch in one transaction, then its entries in one round trip."""
        ids = [e.letter.delivery_id for e in batch if e.letter.delivery_id is not None]
        try:
            found = iter(self.rows.purge_dead_letters(ids))
        except sqlalchemy.exc.OperationalError:
            raise
        except Exception as exc:
            if len(batch) > 1:  # isolate the culprit, as in requeue
                return [r for e in batch for r in self._purge_batch([e])]
            return [ItemResult(batch[0], Outcome.FAILED, f"{type(exc).__name__}: {exc}")]
        steps = [
            next(found) if e.letter.delivery_id is not None else PurgeStep.MISSING for e in batch
        ]
        try:
            removed = self.dead_letters.remove_many([e.letter for e in batch])
        except BrokerUnavailable:
            raise
        except Exception as exc:
            return [ItemResult(e, Outcome.FAILED, f"{type(exc).__name__}: {exc}") for e in batch]
        results = []
        for entry, step, gone in zip(batch, steps, removed, strict=True):
            if step is PurgeStep.PURGED:
                results.append(ItemResult(entry, Outcome.PURGED))
                continue
            why = "no delivery row" if step is PurgeStep.MISSING else "delivery not dead-lettered"
            results.append(
                ItemResult(
                    entry, Outcome.SKIPPED, f"{why}; entry {'removed' if gone else 'already gone'}"
                )
            )
        return results


def dead_lettered_counts(sessions: sessionmaker[Session]) -> dict[str | None, int]:
    """Dead-lettered deliveries per queue name, as PostgreSQL records them."""
    d = Delivery
    with sessions() as s:
        return {
            queue: int(count)
            for queue, count in s.execute(
                sa.select(d.queue_name, sa.func.count())
                .where(d.dead_lettered_at.is_not(None), d.status == DeliveryStatus.FAILED)
                .group_by(d.queue_name)
            )
        }


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The two views of the dead letters, side by side (:meth:`DeadLetterOps.compare`)."""

    both: int
    #: Dead-lettered rows with no dead letter in the broker: the message
    #: expired from the broker (7 days) or was lost; ``requeue`` cannot move it.
    database_only: list[DeliveryInfo]
    #: Dead letters whose delivery is not dead-lettered in the database (requeued
    #: or purged since, no row, a second dead letter of one delivery).
    broker_only: list[Entry]

    @property
    def agree(self) -> bool:
        return not self.database_only and not self.broker_only


@dataclasses.dataclass(frozen=True)
class Disagreement:
    """A queue whose dead letters the database and the broker count differently."""

    queue: str
    database: int
    broker: int

    def describe(self) -> str:
        more, fewer = (
            ("database", "broker") if self.database > self.broker else ("broker", "database")
        )
        return (
            f"{self.queue}: {self.database} in the database, {self.broker} in the broker"
            f" ({abs(self.database - self.broker)} more in the {more} than in the {fewer})"
        )

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare_counts(
    broker: Sequence[QueueCounts], database: dict[str | None, int]
) -> list[Disagreement]:
    """Every queue where the broker's dead letters and the database's
    dead-lettered deliveries differ in number (a row without a queue name, or
    on a queue the broker was not asked about, counts as a disagreement)."""
    seen = {q.queue: q.dead for q in broker}
    names = sorted(set(seen) | {q or "(no queue)" for q in database})
    found = []
    for name in names:
        db = database.get(None if name == "(no queue)" else name, 0)
        held = seen.get(name, 0)
        if db != held:
            found.append(Disagreement(name, db, held))
    return found


def _iso(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat(timespec="seconds") if value else None


def _chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


_DONE = (Outcome.REQUEUED, Outcome.WOULD_REQUEUE, Outcome.PURGED, Outcome.WOULD_PURGE)


def _chunk_size(left: int | None, filtering: bool) -> int:
    """How many dead letters to read and join next: no more than ``--limit``
    still wants, unless a filter on the row may reject some of them."""
    if left is None or filtering:
        return BATCH_SIZE
    return min(left, BATCH_SIZE)


def _count(counts: Counts, result: ItemResult) -> None:
    if result.outcome in _DONE:
        counts.done += 1
    elif result.outcome is Outcome.SKIPPED:
        counts.skipped += 1
    else:
        counts.failed += 1


def _each(
    entries: Sequence[Entry],
    one: Callable[[Entry], ItemResult],
    progress: Progress | None,
) -> tuple[Counts, list[ItemResult]]:
    """Apply ``one`` to every entry, counting done, skipped and failed."""
    counts = Counts()
    results = []
    for entry in entries:
        result = one(entry)
        _count(counts, result)
        results.append(result)
        if progress:
            progress(result)
    return counts, results


_RATE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:/\s*(s|sec|second|m|min|minute|h|hour))?\s*")
_RATE_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60}
_RATE_SECONDS |= {"h": 3600, "hour": 3600}


def parse_rate(text: str, *, field: str = "--rate") -> float:
    """``200/s``, ``6000/m``, ``50000/h`` or a bare number (per second) -> per second."""
    match = _RATE.fullmatch(text)
    per = float(match.group(1)) / _RATE_SECONDS[match.group(2) or "s"] if match else 0.0
    if per <= 0:
        raise ValidationError(
            field, f"expected a rate above 0 such as 200/s, 6000/m or 200; got {text!r}"
        )
    return per


class Pacer:
    """Holds a bulk run to ``rate`` dead letters per second on average.

    Before each batch it waits until the batches before it are no longer
    ahead of the rate; batches are cut small enough (a tenth of a second's
    worth) that a provider sees a steady flow, not a burst a second.
    """

    def __init__(
        self,
        rate: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self.clock = clock
        self.sleep = sleep
        self.started: float | None = None
        self.admitted = 0

    def batch_size(self, largest: int) -> int:
        return max(1, min(largest, math.ceil(self.rate / 10)))

    def wait_for(self, count: int) -> None:
        """Return when ``count`` more may go without exceeding the rate."""
        now = self.clock()
        if self.started is None:
            self.started = now
        due = self.started + self.admitted / self.rate
        if due > now:
            self.sleep(due - now)
        self.admitted += count
